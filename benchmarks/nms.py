"""NMS on the device: time at 100, 1,000 and 8,400 candidates, and agreement with torchvision's ``nms``.

    python benchmarks/nms.py [--rounds 30] [--json benchmarks/nms.json]

Candidates look like a YOLO head's after the confidence filter: clusters of jittered boxes around objects
of several classes and sizes on a 640x640 input, plus scattered background boxes; scores in (0.25, 1).
Contenders, side by side in shuffled rounds (one thread): ``edgeinfer.tasks.nms.batched_nms`` (what the device
runs: OpenCV's NMS class by class), the plain greedy loop in numpy, and ``torchvision.ops.nms`` on class-offset boxes (what Ultralytics
calls; the reference for the kept indices). Also the whole Ultralytics raw-head decode of a real-sized
(1, 84, 8400) output with that many candidates above the threshold.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np

from edgeinfer.tasks import decoders as detect
from edgeinfer.tasks import nms
from edgeinfer.spec import Postprocess

SIZES = (100, 1000, 8400)


def candidates(n: int, seed: int = 0, classes: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    objects = max(1, n // 40)
    centres = rng.uniform(40, 600, (objects, 2))
    sizes = rng.uniform(16, 300, (objects, 2))
    owner = rng.integers(0, objects, n)
    background = rng.random(n) < 0.2
    c = np.where(background[:, None], rng.uniform(0, 640, (n, 2)), centres[owner] + rng.normal(0, 6, (n, 2)))
    wh = np.where(background[:, None], rng.uniform(8, 120, (n, 2)), sizes[owner] * rng.uniform(0.85, 1.15, (n, 2)))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
    scores = rng.uniform(0.25, 1.0, n).astype(np.float32)
    cls = np.where(background, rng.integers(0, classes, n), owner % classes).astype(np.int64)
    return boxes, scores, cls


def raw_head(n_above: int, seed: int = 0, anchors: int = 8400, classes: int = 80) -> np.ndarray:
    """A (1, 4 + classes, anchors) output (C-contiguous, as ONNX Runtime returns it) with ``n_above``
    anchors whose best class clears 0.25."""
    boxes, scores, cls = candidates(anchors, seed, classes)
    xywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
    probs = np.random.default_rng(seed + 1).uniform(0, 0.2, (anchors, classes)).astype(np.float32)
    probs[np.arange(n_above), cls[:n_above]] = scores[:n_above]
    return np.ascontiguousarray(np.concatenate([xywh, probs], 1).T[None], dtype=np.float32)


def numpy_greedy(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """The plain greedy loop, vectorised over the remaining boxes (the obvious numpy implementation)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        order = rest[~(inter / (areas[i] + areas[rest] - inter) > iou)]
    return np.asarray(keep)


def main() -> None:
    import torch
    import torchvision

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", default=str(Path(__file__).with_name("nms.json")))
    args = ap.parse_args()
    post = Postprocess(decoder="ultralytics_raw", outputs=("output0",))
    rows = []
    for n in SIZES:
        boxes, scores, cls = candidates(n)
        offset = boxes + cls[:, None].astype(np.float32) * np.float32(post.max_wh)
        tb, ts = torch.from_numpy(offset), torch.from_numpy(scores)
        head = raw_head(n)
        contenders = {
            "edgeinfer batched_nms": lambda: nms.batched_nms(boxes, scores, cls, post.iou, max_wh=post.max_wh),
            "numpy greedy loop": lambda: numpy_greedy(offset, scores, post.iou),
            "torchvision.ops.nms": lambda: torchvision.ops.nms(tb, ts, post.iou).numpy(),
            "edgeinfer decode (1, 84, 8400) + NMS": lambda: detect.decode(post, detect.Head(), [head], None, (640, 640)),
        }
        ref = torchvision.ops.nms(tb, ts, post.iou).numpy()
        ours = nms.batched_nms(boxes, scores, cls, post.iou, max_wh=post.max_wh)
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for fn in contenders.values():
            fn()
        for _ in range(args.rounds):
            order = list(contenders)
            random.shuffle(order)
            for name in order:
                t0 = time.perf_counter()
                contenders[name]()
                times[name].append((time.perf_counter() - t0) * 1e3)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"candidates": n, "kept": int(len(ref)), "same_kept_as_torchvision": bool(np.array_equal(ours, ref)),
                     "median_ms": {k: round(v, 4) for k, v in med.items()}})
        print(f"{n:5d} candidates, {len(ref)} kept, same as torchvision: {np.array_equal(ours, ref)}")
        for k, v in med.items():
            print(f"    {k:40s} {v:8.3f} ms")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "rounds": args.rounds, "threads": 1, "iou": post.iou, "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    names = list(rows[0]["median_ms"])
    print("\n| candidates | kept | same kept as torchvision | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['candidates']} | {r['kept']} | {'yes' if r['same_kept_as_torchvision'] else 'NO'} | "
              + " | ".join(f"{r['median_ms'][k]:.3f} ms" for k in names) + " |")


if __name__ == "__main__":
    main()
