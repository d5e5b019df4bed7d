"""Preprocessing parity and speed against the reference library, per resize family and case.

First the headline: a 1080p frame through the ImageNet eval transform (Resize(256), CenterCrop(224),
ToTensor, Normalize), torchvision's PIL pipeline (PIL image in) and v2 on a uint8 CHW tensor against
edgeinfer exact and fast, each fed a BGR frame as OpenCV gives it (the default input), the same frame as
an RGB array, a grayscale frame and a BGRA frame.

Then per family (PIL filters through torchvision, torch tensor resizes through torchvision v2, the
Ultralytics letterbox) and case (upscale, mild and strong downscale, a 1080p frame, odd sizes,
grayscale), the reference transform and edgeinfer's exact and fast modes on the same real photo: worst
and mean difference in levels of 255, and the speed-up (reference time / edgeinfer time) with a BGR frame
(primary) and an RGB array fed to edgeinfer. Every timing is side by side: each round runs every
contender once in a shuffled order, and a speed-up is the median over rounds of the ratio within a round.

    .venv/bin/python benchmarks/preprocess_parity.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
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


def rounds(contenders: dict, runs: int, seed: int = 0) -> dict[str, list[float]]:
    """Each round runs every contender once, in a shuffled order; returns the times per contender."""
    for fn in contenders.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    rng = random.Random(seed)
    for _ in range(runs):
        order = list(contenders.items())
        rng.shuffle(order)
        for key, fn in order:
            t = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - t)
    return samples


def paired(samples: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of time(a) / time(b) within the round."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def measure(ref_fn, ours, inputs, runs):
    """``inputs``: {"bgr": (image, color), "rgb": (image, color)}; pixels must not depend on the input."""
    ref = ref_fn()
    row = {}
    contenders = {"reference": ref_fn}
    for mode, pre in ours.items():
        outs = [pre(img, color=color) for img, color in inputs.values()]
        assert all(np.array_equal(o, outs[0]) for o in outs), f"{mode}: BGR and RGB inputs gave different pixels"
        diff = np.abs(ref.astype(np.float64) - outs[0]) * 255.0
        row[f"{mode}_max"] = round(float(diff.max()), 3)
        row[f"{mode}_mean"] = round(float(diff.mean()), 4)
        for form, (img, color) in inputs.items():
            contenders[f"{mode}_{form}"] = lambda pre=pre, img=img, color=color: pre(img, color=color)
    samples = rounds(contenders, runs)
    row["reference_ms"] = median_ms(samples["reference"])
    for key in contenders:
        if key != "reference":
            row[f"{key}_ms"] = median_ms(samples[key])
            row[f"{key}_speedup"] = paired(samples, "reference", key)
    row["fast_vs_exact_bgr"] = paired(samples, "exact_bgr", "fast_bgr")
    return row


def headline(runs: int) -> list[dict]:
    """The ImageNet eval transform on a 1080p frame, every input form, side by side."""
    from converters.zoo import IMAGENET_MEAN, IMAGENET_STD, imagenet_eval_transform

    rgb = cv2.resize(data.astronaut(), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    gray, bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    pil, tensor = Image.fromarray(rgb), torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    tf = imagenet_eval_transform()
    tv2 = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                      v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    spec = spec_from_transform(tf, check=False)
    exact, fast = Preprocessor(spec), Preprocessor(spec, mode="fast")
    ref = tf(pil).numpy()
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None] * 255
    ours = {"exact": exact, "fast": fast}
    inputs = {"BGR frame": (bgr, "bgr"), "RGB array": (rgb, "rgb"), "grayscale frame": (gray, "bgr"),
              "BGRA frame": (bgra, "bgr")}
    contenders = {"torchvision PIL (PIL image in)": lambda: tf(pil),
                  "torchvision v2 uint8 (CHW tensor in)": lambda: tv2(tensor)}
    levels = {}
    for mode, pre in ours.items():
        for form, (img, color) in inputs.items():
            key = f"edgeinfer {mode}, {form}"
            contenders[key] = lambda pre=pre, img=img, color=color: pre(img, color=color)
            if form != "grayscale frame":  # the others carry the photo's colours: compare with the reference
                levels[key] = np.abs(ref - pre(img, color=color)) * std  # in levels of 255 before Normalize
    samples = rounds(contenders, runs)
    out = []
    for key in contenders:
        exact_key = key.replace(" fast,", " exact,")
        out.append({"path": key, "ms": median_ms(samples[key]),
                    "vs_pil": paired(samples, "torchvision PIL (PIL image in)", key),
                    "vs_v2_uint8": paired(samples, "torchvision v2 uint8 (CHW tensor in)", key),
                    "vs_exact_same_input": paired(samples, exact_key, key) if exact_key != key else None,
                    "max_levels": float(levels[key].max()) if key in levels else None,
                    "mean_levels": float(levels[key].mean()) if key in levels else None})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    head = headline(2 * args.runs)
    rows = []
    for fam, make in families().items():
        for case, img, s, c, loader in cases():
            tf = make(s, c)
            if fam.startswith("torch") and loader == "l":
                continue  # tensor pipelines take RGB images here
            pil = Image.fromarray(img).convert("RGB" if loader == "rgb" else "L")
            spec = spec_from_transform(tf, loader_color=loader, check=False)
            ours = {m: Preprocessor(spec, mode=m) for m in ("exact", "fast")}
            # a grayscale photo is one plane either way; colour photos come as OpenCV's BGR and as RGB
            inputs = ({"bgr": (img, "bgr"), "rgb": (img, "rgb")} if img.ndim == 2 else
                      {"bgr": (np.ascontiguousarray(img[..., ::-1]), "bgr"), "rgb": (img, "rgb")})
            with torch.no_grad():
                row = measure(lambda: tf(pil).numpy(), ours, inputs, args.runs)
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
                     **measure(ref_fn, ours, {"bgr": (bgr, "bgr"), "rgb": (img, "rgb")}, args.runs)})

    print(f"ImageNet eval transform on a 1920x1080 frame, {2 * args.runs} shuffled rounds, one thread")
    print(f"{'path':40s} {'ms':>6s} {'vs PIL':>7s} {'vs v2':>6s} {'vs exact':>8s} {'max/mean levels':>16s}")
    for r in head:
        vs_exact = f"{r['vs_exact_same_input']:7.2f}x" if r["vs_exact_same_input"] else f"{'':8s}"
        lv = f"{r['max_levels']:6.2f} / {r['mean_levels']:5.3f}" if r["mean_levels"] is not None else ""
        print(f"{r['path']:40s} {r['ms']:6.2f} {r['vs_pil']:6.2f}x {r['vs_v2_uint8']:5.2f}x {vs_exact} {lv:>16s}")
    print()
    header = (f"{'family':28s} {'case':28s} {'ref ms':>7s} {'exBGR ms':>8s} {'x':>5s} {'exRGB ms':>8s} {'x':>5s} "
              f"{'max':>5s} {'mean':>6s} {'faBGR ms':>8s} {'x':>5s} {'faRGB ms':>8s} {'x':>5s} {'max':>6s} {'mean':>6s} "
              f"{'fa/ex':>5s}")
    print(header)
    for r in rows:
        print(f"{r['family']:28s} {r['case']:28s} {r['reference_ms']:7.2f} {r['exact_bgr_ms']:8.2f} "
              f"{r['exact_bgr_speedup']:5.2f} {r['exact_rgb_ms']:8.2f} {r['exact_rgb_speedup']:5.2f} "
              f"{r['exact_max']:5.2f} {r['exact_mean']:6.3f} {r['fast_bgr_ms']:8.2f} {r['fast_bgr_speedup']:5.2f} "
              f"{r['fast_rgb_ms']:8.2f} {r['fast_rgb_speedup']:5.2f} {r['fast_max']:6.2f} {r['fast_mean']:6.3f} "
              f"{r['fast_vs_exact_bgr']:5.2f}")
    out = Path(__file__).with_name("preprocess_parity.json")
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                               "opencv": cv2.__version__, "threads": 1, "runs": args.runs,
                               "inputs": "bgr: the frame as OpenCV gives it (default color='bgr'); rgb: RGB array",
                               "headline": head, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
