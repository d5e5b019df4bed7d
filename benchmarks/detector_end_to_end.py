"""Detector end to end on a 1080p BGR frame: edgeinfer vs Ultralytics' predictor on the same ONNX file.

    python benchmarks/detector_end_to_end.py [--rounds 30] [--json benchmarks/detector_end_to_end.json]

The models are the ones ``tests.material.shapes`` trains here (YOLO11n detect and segment on shapes over real
photos, cached),
exported by Ultralytics' exporter at imgsz 640: a static file (full 640x640 letterbox) and a dynamic one
(minimal rectangle, 384x640 for 1080p). Frames are decoded once (decode excluded); every round runs each
contender once on the same frame, in shuffled order (benchmarks/side_by_side.py): ``edgeinfer Model.predict(frame)`` and Ultralytics'
``YOLO(file).predict(frame)`` (its letterbox, ONNX Runtime session, NMS and scaling), plus ONNX Runtime
alone on edgeinfer's prepared input (the floor both share). Both use ONNX Runtime's default threads.
Medians; ratios are medians of the within-round ratios. Results must agree: same boxes within 0.01 px.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


# the test material (tests/material) is imported from the checkout: a script's own folder is on sys.path, not the root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("YOLO_OFFLINE", "1")
# the detectors the test suite reads (committed, keyed by recipe), not a fresh training run
os.environ.setdefault("EDGEINFER_CACHE", str(Path(__file__).resolve().parent.parent / "tests" / "data" / "detectors"))


def _files(shapes):
    """(task, variant, ONNX path, 1080p frames) for the trained detector and instance segmenter."""
    import cv2

    tmp = tempfile.mkdtemp(prefix="edgeinfer-detbench-")
    for target in ("detect", "segment"):
        frames = {name: cv2.resize(f.image, (1920, 1080)) for name, f in shapes.test_frames(target).items()}
        files = shapes.export(shapes.train(target), tmp, imgsz=640, variants=["raw", "raw-dynamic"])
        for variant, path in files.items():
            yield target, variant, path, frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", default=str(Path(__file__).with_name("detector_end_to_end.json")))
    args = ap.parse_args()

    import cv2
    import onnxruntime as ort
    from ultralytics import YOLO, __version__ as ultralytics_version

    import edgeinfer
    from benchmarks import side_by_side
    from tests.material import shapes

    rows = []
    for target, variant, path, frames in _files(shapes):
        model = edgeinfer.load(path)
        yolo = YOLO(str(path), task=target)
        frame_list = list(frames.values())
        for f in frame_list:  # warm both, and check they agree
            a, b = model.predict(f), yolo.predict(f, verbose=False)[0].boxes
            assert side_by_side.boxes_delta(a.xyxy, a.class_id, b.xyxy.numpy(), b.cls.numpy()) <= 0.01
        prepared = [model.prepare([f]) for f in frame_list]
        n = len(frame_list)
        contenders = {
            "edgeinfer predict": lambda i: model.predict(frame_list[i % n]),
            "Ultralytics predict": lambda i: yolo.predict(frame_list[i % n], verbose=False),
            "ONNX Runtime alone": lambda i: model.infer(prepared[i % n]),
        }
        timed = side_by_side.run(contenders, args.rounds)
        first = prepared[0]
        outs = model.infer(first)
        t0 = time.perf_counter()
        for _ in range(20):
            model.finish(first, outs)
        post_ms = (time.perf_counter() - t0) / 20 * 1e3
        med = {k: round(timed.median(k), 2) for k in contenders}
        size = list(first.batch.shape[2:])
        rows.append({"target": target, "variant": variant, "input": size, "median_ms": med,
                     "speedup_vs_ultralytics": round(timed.ratio("Ultralytics predict", "edgeinfer predict")["median"], 2),
                     "edgeinfer_decode_nms_scale_ms": round(post_ms, 3)})
        print(f"{target} {variant}: input {size}, {med}, edgeinfer {rows[-1]['speedup_vs_ultralytics']}x "
              f"faster; decoding+NMS+scaling {post_ms:.3f} ms", file=sys.stderr)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "onnxruntime": ort.__version__, "ultralytics": ultralytics_version, "rounds": args.rounds,
              "frame": "1920x1080 BGR, decoded once", "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print("| model | file | model input | edgeinfer ms | Ultralytics ms | ORT alone ms | edgeinfer speed-up | edgeinfer "
          "decode+NMS(+masks) ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["median_ms"]
        print(f"| {r['target']} | {r['variant']} | {r['input'][0]}x{r['input'][1]} | {m['edgeinfer predict']:.2f} | "
              f"{m['Ultralytics predict']:.2f} | {m['ONNX Runtime alone']:.2f} | {r['speedup_vs_ultralytics']:.2f}x | "
              f"{r['edgeinfer_decode_nms_scale_ms']:.3f} |")


if __name__ == "__main__":
    main()
