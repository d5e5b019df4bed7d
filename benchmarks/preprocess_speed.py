"""Preprocessing: edgeinfer exact mode vs the torchvision pipelines it reproduces, side by side in one run.

Reference: ``Resize(256) + CenterCrop(224) + ToTensor + Normalize`` on a PIL image (what users train
with) and the v2 pipeline on a uint8 tensor. edgeinfer runs the spec exported from the PIL pipeline on
the numpy frame. Prints a table and writes JSON next to this file.

    .venv/bin/python benchmarks/preprocess_speed.py
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from skimage import data
from torchvision.transforms import v2

from converters.transforms import spec_from_transform
from converters.zoo import IMAGENET_MEAN, IMAGENET_STD, imagenet_eval_transform
from edgeinfer import Preprocessor


def timeit(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    pil_tf = imagenet_eval_transform()
    v2_tf = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    pre = Preprocessor(spec_from_transform(pil_tf))
    photo = data.astronaut()
    frames = {"1080p frame (1920x1080)": cv2.resize(photo, (1920, 1080), interpolation=cv2.INTER_CUBIC),
              "photo (512x512)": photo, "small photo (451x300)": data.chelsea()}
    rows = []
    for name, rgb in frames.items():
        pil = Image.fromarray(rgb)
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        diff = float(np.max(np.abs(pil_tf(pil).numpy() - pre(rgb, color="rgb"))) * 0.229 * 255)
        runs = 30
        t_pil = timeit(lambda: pil_tf(Image.fromarray(rgb)), runs)
        t_v2 = timeit(lambda: v2_tf(tensor), runs)
        t_ours = timeit(lambda: pre(rgb, color="rgb"), runs)
        rows.append({"input": name, "torchvision_pil_ms": t_pil, "torchvision_v2_uint8_ms": t_v2,
                     "edgeinfer_exact_ms": t_ours, "speedup_vs_pil": t_pil / t_ours,
                     "max_diff_levels_vs_pil": round(diff, 4)})
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{platform.system()}, 1 thread", "rows": rows}
    print(f"{'input':26s} {'tv PIL ms':>10s} {'tv v2 u8 ms':>12s} {'edgeinfer ms':>13s} {'x vs PIL':>9s} {'max diff':>9s}")
    for r in rows:
        print(f"{r['input']:26s} {r['torchvision_pil_ms']:10.2f} {r['torchvision_v2_uint8_ms']:12.2f} "
              f"{r['edgeinfer_exact_ms']:13.2f} {r['speedup_vs_pil']:9.2f} {r['max_diff_levels_vs_pil']:9.4f}")
    out = Path(__file__).with_name("preprocess_speed.json")
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
