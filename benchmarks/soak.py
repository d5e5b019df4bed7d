"""Soak: 20,000 frames through edgeinfer.tools.stream; resident memory at start and end, latency drift.

A 320x240 MPEG-4 file of 500 frames (written here from a real photo) is opened as a *live* source, so
each time it ends the stream's reconnection path reopens it: the run also soaks reconnects, and, as a
live source, capture outpaces the model and stale frames are dropped (counted). The model is
mobilenet_v3_small exported here. Memory is the process's current resident set (/proc/self/statm),
measured after 1,000 warm-up frames and at the end. Writes soak.json.

    .venv/bin/python benchmarks/soak.py [--frames 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=20_000)
    args = parser.parse_args()
    import torchvision
    from skimage import data

    import converters
    import edgeinfer
    from converters.zoo import imagenet_eval_transform
    from edgeinfer.tools.bench import cpu_model
    from edgeinfer.tools.stream import StreamStats, stream

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "loop.mp4"
        base = cv2.resize(data.astronaut()[..., ::-1], (480, 240))
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (320, 240))
        for i in range(500):
            writer.write(np.ascontiguousarray(np.roll(base, i, axis=1)[:, :320]))
        writer.release()
        path = Path(tmp) / "m.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converters.export(torchvision.models.mobilenet_v3_small(weights=None).eval(), path,
                              transform=imagenet_eval_transform())
        model = edgeinfer.load(path, threads=1)
        stats = StreamStats()
        start_rss = None
        latency, inference = [], []
        t0 = time.perf_counter()
        for _, _, timing in stream(model, str(video), live=True, max_frames=args.frames, retries=1_000_000,
                                   backoff=0.001, stats=stats):
            latency.append(timing.latency_ms)
            inference.append(timing.inference_ms)
            if stats.frames == 1000:
                start_rss = rss_mb()
        end_rss = rss_mb()
        wall = time.perf_counter() - t0
    lat, inf = np.asarray(latency), np.asarray(inference)
    head, tail = slice(1000, 2000), slice(-1000, None)
    out = {"date": time.strftime("%Y-%m-%d"), "cpu_model": cpu_model(), "frames": stats.frames,
           "wall_s": wall, "fps": stats.fps, "reconnects": stats.reconnects, "dropped": stats.dropped,
           "errors_recorded": stats.error_count, "errors_kept": len(stats.errors),
           "rss_mb_after_1000": start_rss, "rss_mb_end": end_rss, "rss_growth": end_rss / start_rss - 1,
           "latency_ms_frames_1000_2000": float(np.median(lat[head])), "latency_ms_last_1000": float(np.median(lat[tail])),
           "inference_ms_frames_1000_2000": float(np.median(inf[head])), "inference_ms_last_1000": float(np.median(inf[tail]))}
    Path(__file__).with_name("soak.json").write_text(json.dumps(out, indent=2) + "\n")
    for k, v in out.items():
        print(f"{k:32s} {v}")


if __name__ == "__main__":
    main()
