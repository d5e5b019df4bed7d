"""Preprocessing parity and speed against the reference library, per resize family and case.

For each family (PIL filters through torchvision, torch tensor resizes through torchvision v2, the
Ultralytics letterbox) and each case (upscale, mild and strong downscale, a 1080p frame, odd sizes,
grayscale), the reference transform and edgeinfer's exact and fast modes run side by side on the same
real photo: worst and mean difference in levels of 255, and the time ratio (reference / edgeinfer).

    .venv/bin/python benchmarks/preprocess_parity.py [--runs 20]
"""

from __future__ import annotations

import argparse
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
from sklearn.datasets import load_sample_images
from torchvision import transforms as T
from torchvision.transforms import v2

from converters.transforms import spec_from_transform
from edgeinfer import InputSpec, OutputSpec, Preprocessor, Spec, Step


def cases() -> list[tuple[str, np.ndarray, int, int, str]]:
    """(case, RGB or gray image, resize shorter side, crop, loader colour)."""
    china = load_sample_images().images[0]
    frame = cv2.resize(data.astronaut(), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    return [
        ("upscale 300x451 -> 384", data.chelsea(), 400, 384, "rgb"),
        ("mild down 512 -> 448", data.astronaut(), 448, 448, "rgb"),
        ("strong down 427x640 -> 112", china, 128, 112, "rgb"),
        ("1080p frame -> 224", frame, 256, 224, "rgb"),
        ("odd 333x517 -> 89", china[40:373, 60:577], 97, 89, "rgb"),
        ("grayscale 512 -> 224", data.camera(), 256, 224, "l"),
    ]


def families() -> dict[str, callable]:
    def pil(mode):
        return lambda s, c: T.Compose([T.Resize(s, interpolation=mode), T.CenterCrop(c), T.ToTensor()])

    def tensor(mode, aa, dtype_first=False):
        if dtype_first:
            return lambda s, c: v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                            v2.Resize(s, interpolation=mode, antialias=aa), v2.CenterCrop(c)])
        return lambda s, c: v2.Compose([v2.ToImage(), v2.Resize(s, interpolation=mode, antialias=aa), v2.CenterCrop(c),
                                        v2.ToDtype(torch.float32, scale=True)])

    M = T.InterpolationMode
    out = {f"PIL {m.value}": pil(m) for m in (M.NEAREST, M.BILINEAR, M.BICUBIC, M.BOX, M.HAMMING, M.LANCZOS)}
    out.update({
        "torch uint8 bilinear aa": tensor(M.BILINEAR, True),
        "torch uint8 bilinear no-aa": tensor(M.BILINEAR, False),
        "torch uint8 bicubic aa": tensor(M.BICUBIC, True),
        "torch float bilinear aa": tensor(M.BILINEAR, True, dtype_first=True),
        "torch float bicubic no-aa": tensor(M.BICUBIC, False, dtype_first=True),
    })
    return out


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure(ref_fn, ours, image, color, runs):
    ref = ref_fn()
    row = {"reference_ms": median_ms(ref_fn, runs)}
    for mode, pre in ours.items():
        got = pre(image, color=color)
        diff = np.abs(ref.astype(np.float64) - got) * 255.0
        row[f"{mode}_max"] = round(float(diff.max()), 3)
        row[f"{mode}_mean"] = round(float(diff.mean()), 4)
        row[f"{mode}_ms"] = median_ms(lambda: pre(image, color=color), runs)
        row[f"{mode}_speedup"] = row["reference_ms"] / row[f"{mode}_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows = []
    for fam, make in families().items():
        for case, img, s, c, loader in cases():
            tf = make(s, c)
            if fam.startswith("torch") and loader == "l":
                continue  # tensor pipelines take RGB images here
            pil = Image.fromarray(img).convert("RGB" if loader == "rgb" else "L")
            spec = spec_from_transform(tf, loader_color=loader, check=False)
            ours = {m: Preprocessor(spec, mode=m) for m in ("exact", "fast")}
            with torch.no_grad():
                row = measure(lambda: tf(pil).numpy(), ours, img, "rgb", args.runs)
            rows.append({"family": fam, "case": case, **row})
    # Ultralytics letterbox: exact by construction (the same cv2 calls), measured all the same.
    from ultralytics.data.augment import LetterBox

    lb = LetterBox(new_shape=(640, 640))
    for case, img, _, _, loader in cases():
        if loader != "rgb":
            continue
        bgr = np.ascontiguousarray(img[..., ::-1])
        h, w = lb(image=bgr).shape[:2]
        spec = Spec(steps=(Step("letterbox", {"size": [640, 640]}), Step("to_float", {"scale": "div255"})),
                    input=InputSpec("images", (None, 3, h, w)), output=OutputSpec("output0")).validate()
        ours = {m: Preprocessor(spec, mode=m) for m in ("exact", "fast")}
        ref_fn = lambda: (np.ascontiguousarray(lb(image=bgr)[..., ::-1].transpose(2, 0, 1)) / np.float32(255))
        rows.append({"family": "ultralytics letterbox 640", "case": case,
                     **measure(ref_fn, ours, bgr, "bgr", args.runs)})

    header = (f"{'family':28s} {'case':28s} {'ref ms':>7s} {'exact ms':>8s} {'x':>5s} {'max':>5s} {'mean':>6s} "
              f"{'fast ms':>8s} {'x':>5s} {'max':>6s} {'mean':>6s}")
    print(header)
    for r in rows:
        print(f"{r['family']:28s} {r['case']:28s} {r['reference_ms']:7.2f} {r['exact_ms']:8.2f} "
              f"{r['exact_speedup']:5.2f} {r['exact_max']:5.2f} {r['exact_mean']:6.3f} {r['fast_ms']:8.2f} "
              f"{r['fast_speedup']:5.2f} {r['fast_max']:6.2f} {r['fast_mean']:6.3f}")
    out = Path(__file__).with_name("preprocess_parity.json")
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                               "threads": 1, "runs": args.runs, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
