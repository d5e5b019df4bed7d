"""Pipelined stream vs a plain sequential loop on the same video file, side by side in one run.

A 1280x720 MPEG-4 video (written here with OpenCV from a real photo, panning) through mobilenet_v3_small
(exported here): the plain loop reads, predicts and repeats on one thread; `edgeinfer.stream` overlaps
capture+decode, preprocessing and inference. Each is measured with ONNX Runtime at 1 and at all threads,
alternating, best of 3; the ratio compares each side's best configuration. Writes stream_throughput.json.

    .venv/bin/python benchmarks/stream_throughput.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    import torchvision
    from skimage import data

    import converters
    import edgeinfer
    from converters.zoo import imagenet_eval_transform
    from edgeinfer.bench import cpu_model
    from edgeinfer.stream import StreamStats, stream

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "pan.mp4"
        base = cv2.resize(data.astronaut()[..., ::-1], (1600, 900), interpolation=cv2.INTER_CUBIC)
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (1280, 720))
        frames = 300
        for i in range(frames):
            x = int(160 + 150 * np.sin(i / 20))
            writer.write(np.ascontiguousarray(base[90:810, x:x + 1280]))
        writer.release()
        onnx_path = Path(tmp) / "m.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converters.export(torchvision.models.mobilenet_v3_small(weights=None).eval(), onnx_path,
                              transform=imagenet_eval_transform())
        threads = sorted({1, os.cpu_count() or 1})
        results = {}
        for rep in range(3):
            for n in threads:
                model = edgeinfer.load(onnx_path, threads=n)
                cap, t, k = cv2.VideoCapture(str(video)), time.perf_counter(), 0
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    model.predict(frame)
                    k += 1
                cap.release()
                seq = k / (time.perf_counter() - t)
                stats = StreamStats()
                count = sum(1 for _ in stream(model, str(video), stats=stats))
                assert count == k == frames, (count, k)
                for key, fps in ((f"sequential_{n}t", seq), (f"stream_{n}t", stats.fps)):
                    results[key] = max(results.get(key, 0.0), fps)
        best_seq = max(v for k, v in results.items() if k.startswith("sequential"))
        best_stream = max(v for k, v in results.items() if k.startswith("stream"))
    out = {"date": time.strftime("%Y-%m-%d"), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "frames": frames,
           "video": "1280x720 mp4v, 300 frames", "model": "mobilenet_v3_small", "fps": results,
           "best_sequential_fps": best_seq, "best_stream_fps": best_stream, "ratio": best_stream / best_seq}
    Path(__file__).with_name("stream_throughput.json").write_text(json.dumps(out, indent=2) + "\n")
    for k, v in results.items():
        print(f"{k:16s} {v:7.1f} FPS")
    print(f"pipelined / sequential (best vs best): {best_stream / best_seq:.2f}x")


if __name__ == "__main__":
    main()
