"""./edge demo detect: a real detector trained here, exported by Ultralytics, run on the device's camera loop.

1. workstation: train YOLO11n on coloured shapes pasted on real photos (tests.material.shapes; cached, so a
   second run starts at once);
2. export it with Ultralytics' own exporter (a dynamic ONNX file: the predictor letterboxes each frame to
   its minimal stride-aligned rectangle);
3. make a video of held-out photos with shapes moving across them;
4. device: ``edgeinfer camera`` in a fresh process without torch writes the annotated video and one JSON
   line of detections per frame; then the workstation compares every frame with Ultralytics' predictor on
   the same ONNX file.
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


def make_clip(path: Path, frames: list[np.ndarray], *, fps: int = 15, steps: int = 12) -> int:
    """A video that pans across each frame (the shapes move through the picture); returns its frame count."""
    import cv2

    h, w = 400, 640
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    count = 0
    for frame in frames:
        big = cv2.resize(frame, (int(w * 1.25), int(h * 1.25)), interpolation=cv2.INTER_AREA)
        for k in range(steps):
            dx = round((big.shape[1] - w) * k / (steps - 1))
            dy = round((big.shape[0] - h) * k / (steps - 1))
            writer.write(np.ascontiguousarray(big[dy:dy + h, dx:dx + w]))
            count += 1
    writer.release()
    return count


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
        ref = yolo.predict(frame, verbose=False)[0].boxes
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
    from tests.material import shapes

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("[1/4] workstation: YOLO11n on coloured shapes pasted on real photos (cached after the first run)")
    t = time.perf_counter()
    weights = shapes.train("detect", progress=lambda msg: print(f"  {msg}", flush=True))
    record = shapes.training_record(weights)
    print(f"  weights {weights} ({time.perf_counter() - t:.0f} s now; trained in {record.get('seconds', '?')} s; "
          f"validation {record.get('metrics', {})})")
    print("[2/4] export with Ultralytics' own exporter (dynamic ONNX)")
    model_path = shapes.export(weights, out, variants=["raw-dynamic"])["raw-dynamic"]
    print(f"  {model_path} ({model_path.stat().st_size / 1e6:.1f} MB)")
    print("[3/4] a video of held-out photos with shapes moving across them")
    clip = out / "clip.mp4"
    n = make_clip(clip, [f.image for f in shapes.test_frames("detect").values()])
    print(f"  {clip}: {n} frames")
    print("[4/4] device: edgeinfer camera in a fresh process (torch not imported)")
    annotated, jsonl = out / "annotated.mp4", out / "detections.jsonl"
    jsonl.unlink(missing_ok=True)
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import sys\nfrom edgeinfer.cli import main\nrc = main(sys.argv[1:])\n"
                           "print('torch imported on the device side:', 'torch' in sys.modules)\nsys.exit(rc)",
                           "camera", str(model_path), "--source", str(clip), "--out", str(annotated),
                           "--jsonl", str(jsonl)], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        return done.returncode
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip() and "%|" not in line:
            print(f"  {line}")
    print(f"  wall {time.perf_counter() - t:.1f} s; annotated video {annotated}, detections {jsonl}")
    a = agreement(model_path, clip, jsonl)
    print(f"agreement with Ultralytics' predictor on the same file: {a['same_count_and_classes']}/{a['frames']} "
          f"frames with the same detections ({a['boxes']} boxes); max box difference {a['max_box_diff_px']:.4f} px, "
          f"max confidence difference {a['max_confidence_diff']:.2e}")
    return 0 if a["same_count_and_classes"] == a["frames"] else 1


if __name__ == "__main__":
    sys.exit(main())
