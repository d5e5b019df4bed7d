"""./edge demo detect: a real detector trained here, exported by Ultralytics, run on the device's camera loop.

1. workstation: the demo detector, YOLO11n trained on coloured shapes pasted on real photos the way the demo
   video shows them (large, cut by the frame's edges, beside red and flat-coloured things that are not
   shapes: tests.material.shapes, target ``detect-demo-2``); its weights are committed under
   tests/data/detectors, so the demo starts at once. It trains again only if the recipe or the Ultralytics
   version changes: 48 minutes measured on 2 CPU cores shared with other jobs (detect-demo 38 min from the
   tests' detector, then detect-demo-2 10 min), 7-11 more when the tests' detector must train too;
2. export it with Ultralytics' own exporter (a dynamic ONNX file: the predictor letterboxes each frame to
   its minimal stride-aligned rectangle);
3. make a video of held-out photos with shapes moving across them;
4. device: ``edgeinfer camera`` in a fresh process without torch writes the annotated video and one JSON
   line of detections per frame; then the workstation compares every frame with Ultralytics' predictor on
   the same ONNX file, and the detections with the shapes drawn (precision and recall on held-out photos).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: The shapes detectors the tests use and the demo's, committed (tests/conftest.py reads the same folder).
DETECTORS = Path(__file__).resolve().parents[1] / "tests" / "data" / "detectors"
TARGET = "detect-demo-2"
#: A shape counts as one to find when at least this share of it is in the frame; less is neither a miss nor,
#: when found, a false detection (the share the demo detector's labels start at).
MUST_SEE = 0.3
#: The threshold the demo runs at, on both sides (edgeinfer camera --conf, the predictor's conf=). At Ultralytics'
#: default 0.25 this detector also boxes cardboard and a red crate as squares (precision 0.69, recall 0.83 on the
#: clip); at 0.5 it keeps what it is sure of.
CONF = 0.5


#: The video: a 640x400 window panning across frames of 800x500 (shapes 75-200 px, cut by the window's edge
#: as it moves), one frame per held-out photo. Drawn at that size: scaling the tests' frames (360x540 to
#: 180x120) to it stretched the portrait one 2.2x and blew the smallest up 4.4x into a blur.
FRAME, WINDOW = (800, 500), (640, 400)


def demo_frames() -> list:
    """The test frames the video pans across: shapes on the held-out photos, drawn at :data:`FRAME`."""
    from tests.material import shapes

    return list(shapes.test_frames("detect", sizes={name: FRAME for name in shapes.HELDOUT_PHOTOS}).values())


def make_clip(path: Path, frames: list, *, fps: int = 15, steps: int = 12,
              size: tuple[int, int] = WINDOW) -> list[list[tuple[int, np.ndarray, float]]]:
    """A video that pans across each test frame (the shapes move through the picture, in and out of it); each
    frame is first scaled to 1.25 times the video's size (an identity for :func:`demo_frames`).

    Returns, per video frame, the shapes drawn: (class, box x1 y1 x2 y2 of the part in the video frame or
    None, share of the shape in the video frame).
    """
    import cv2

    from tests.material import shapes

    w, h = size
    bw, bh = int(w * 1.25), int(h * 1.25)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    truth = []
    for frame in frames:
        fh, fw = frame.image.shape[:2]
        big = cv2.resize(frame.image, (bw, bh), interpolation=cv2.INTER_AREA)
        masks = [cv2.resize(shapes.mask(sh, fw, fh).astype(np.float32), (bw, bh), interpolation=cv2.INTER_AREA) > 0.5
                 for sh in frame.shapes]
        for k in range(steps):
            dx = round((bw - w) * k / (steps - 1))
            dy = round((bh - h) * k / (steps - 1))
            writer.write(np.ascontiguousarray(big[dy:dy + h, dx:dx + w]))
            shown = []
            for sh, m in zip(frame.shapes, masks):
                ys, xs = np.nonzero(m[dy:dy + h, dx:dx + w])
                box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float) if len(xs) else None
                shown.append((sh.cls, box, len(xs) / max(int(m.sum()), 1)))
            truth.append(shown)
    writer.release()
    return truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def precision_recall(rows: list[dict], truth: list[list[tuple[int, np.ndarray, float]]], *,
                     iou: float = 0.5) -> dict[str, float]:
    """The device's detections against the shapes drawn: a detection is right when it has a shape's class and
    IoU >= ``iou`` with the shape's visible part (each shape found once, the most confident detection first);
    a detection on a shape less than :data:`MUST_SEE` in view is not counted either way."""
    tp = fp = fn = 0
    for row, shown in zip(rows, truth):
        dets = sorted(row["detections"], key=lambda d: -d["confidence"])
        taken = [False] * len(shown)
        for d in dets:
            box = np.asarray(d["xyxy"], float)
            best, hit = iou, None
            for j, (cls, gt, _) in enumerate(shown):
                if gt is not None and not taken[j] and cls == d["class_id"] and _iou(box, gt) >= best:
                    best, hit = _iou(box, gt), j
            if hit is not None:
                taken[hit] = True
                tp += shown[hit][2] >= MUST_SEE
            elif not any(gt is not None and share < MUST_SEE and _iou(box, gt) >= iou for _, gt, share in shown):
                fp += 1
        fn += sum(1 for j, (_, gt, share) in enumerate(shown) if share >= MUST_SEE and not taken[j])
    return {"true": tp, "false": fp, "missed": fn, "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1)}


def agreement(model_path: Path, clip: Path, jsonl: Path) -> dict[str, float]:
    """Frame by frame: edgeinfer's detections (from the device run) vs Ultralytics' predictor on the same file."""
    import cv2
    from ultralytics import YOLO

    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    yolo = YOLO(str(model_path), task="detect")
    cap = cv2.VideoCapture(str(clip))
    same, worst_px, worst_conf, boxes = 0, 0.0, 0.0, 0
    for row in rows:
        ok, frame = cap.read()
        if not ok:
            break
        ref = yolo.predict(frame, conf=CONF, verbose=False)[0].boxes
        got = row["detections"]
        boxes += len(got)
        if len(got) != len(ref) or [d["class_id"] for d in got] != ref.cls.int().tolist():
            continue
        if got:
            worst_px = max(worst_px, float(np.abs(np.array([d["xyxy"] for d in got]) - ref.xyxy.numpy()).max()))
            worst_conf = max(worst_conf, float(np.abs(np.array([d["confidence"] for d in got]) - ref.conf.numpy()).max()))
        same += 1
    return {"frames": len(rows), "same_count_and_classes": same, "boxes": boxes,
            "max_box_diff_px": worst_px, "max_confidence_diff": worst_conf}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out/detect", help="folder for the model, the clip and the results")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("EDGEINFER_CACHE", str(DETECTORS))
    from tests.material import shapes

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("[1/4] workstation: YOLO11n on coloured shapes pasted on real photos as the video shows them "
          f"(committed in {DETECTORS}; trained here only if the recipe changed)")
    t = time.perf_counter()
    weights = shapes.train(TARGET, progress=lambda msg: print(f"  {msg}", flush=True))
    record = shapes.training_record(weights)
    print(f"  weights {weights.name} ({time.perf_counter() - t:.0f} s now; trained in {record.get('seconds', '?')} s "
          f"from {record.get('started_from')}; validation {record.get('metrics', {})})")
    print("[2/4] export with Ultralytics' own exporter (dynamic ONNX)")
    model_path = shapes.export(weights, out, variants=["raw-dynamic"])["raw-dynamic"]
    print(f"  {model_path} ({model_path.stat().st_size / 1e6:.1f} MB)")
    print("[3/4] a video of held-out photos with shapes moving across them")
    clip = out / "clip.mp4"
    truth = make_clip(clip, demo_frames())
    print(f"  {clip}: {len(truth)} frames, {sum(s >= MUST_SEE for f in truth for _, _, s in f)} shapes in view")
    print("[4/4] device: edgeinfer camera in a fresh process (torch not imported)")
    annotated, jsonl = out / "annotated.mp4", out / "detections.jsonl"
    jsonl.unlink(missing_ok=True)
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import sys\nfrom edgeinfer.cli import main\nrc = main(sys.argv[1:])\n"
                           "print('torch imported on the device side:', 'torch' in sys.modules)\nsys.exit(rc)",
                           "camera", str(model_path), "--source", str(clip), "--out", str(annotated),
                           "--jsonl", str(jsonl), "--conf", str(CONF)], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        return done.returncode
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip() and "%|" not in line:
            print(f"  {line}")
    print(f"  wall {time.perf_counter() - t:.1f} s; annotated video {annotated}, detections {jsonl}")
    a = agreement(model_path, clip, jsonl)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    pr = precision_recall(rows, truth)
    print(f"agreement with Ultralytics' predictor on the same file: {a['same_count_and_classes']}/{a['frames']} "
          f"frames with the same detections ({a['boxes']} boxes); max box difference {a['max_box_diff_px']:.4f} px, "
          f"max confidence difference {a['max_confidence_diff']:.2e}")
    print(f"the shapes on the held-out photos: precision {pr['precision']:.2f} ({pr['true']} right, {pr['false']} "
          f"false), recall {pr['recall']:.2f} ({pr['missed']} missed) at IoU 0.5 with the class, shapes at least "
          f"{MUST_SEE:.0%} in view, confidence {CONF}")
    return 0 if a["same_count_and_classes"] == a["frames"] else 1


if __name__ == "__main__":
    sys.exit(main())
