"""The main job, end to end on real data: ``./edge demo`` (or ``python -m benchmarks.demo``).

1. Workstation: train a real torchvision ResNet-18 on scikit-learn's handwritten digits (1,797 real 8x8
   scans, shipped inside the package), held-out split kept apart; export it with its eval transform.
2. Device: in a fresh process that never imports torch, load the one .onnx file, predict every held-out
   image from its PNG file, and time it.
3. Compare: accuracy of torch and of the device runtime, their top-1 agreement and probability difference.
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

LABELS = [str(d) for d in range(10)]


def eval_transform():
    """The eval transform the digits model trains and deploys with (PIL grayscale images in)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((32, 32), interpolation=T.InterpolationMode.BICUBIC), T.Grayscale(num_output_channels=3),
                      T.ToTensor(), T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The digits as 8x8 uint8 grayscale images (0-16 scaled to 0-255) and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255.0 / 16.0)).astype(np.uint8), d.target.astype(np.int64)


def train(model, images, labels, transform, *, epochs: int, seed: int = 0, log=print):
    """Train ``model`` with AdamW on PIL grayscale images through ``transform``, with small random shifts."""
    import torch
    from PIL import Image

    torch.manual_seed(seed)
    x = torch.stack([transform(Image.fromarray(im, "L")) for im in images])
    y = torch.as_tensor(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            batch = x[idx]
            shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
            batch = torch.roll(batch, shifts=shift, dims=(2, 3))  # augmentation in training only
            loss = torch.nn.functional.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(f"  epoch {epoch + 1}/{epochs}: loss {total / len(x):.3f}")
    return model.eval()


def device_side(model_path: str, image_dir: str) -> dict:
    """Predict every PNG in ``image_dir`` with the torch-free runtime; return predictions and timings."""
    t0 = time.perf_counter()
    import edgeinfer

    model = edgeinfer.load(model_path)
    t_load = time.perf_counter() - t0
    files = sorted(Path(image_dir).glob("*.png"))
    model.predict(files[0])  # warm-up
    scores, lat = [], []
    for f in files:
        t = time.perf_counter()
        pred = model.predict(f, top_k=1)
        lat.append(time.perf_counter() - t)
        scores.append(pred.scores.tolist())
    lat_ms = np.array(lat) * 1e3
    return {"files": [f.name for f in files], "scores": scores, "load_s": t_load,
            "p50_ms": float(np.percentile(lat_ms, 50)), "p90_ms": float(np.percentile(lat_ms, 90)),
            "self_test": model.self_test().to_dict(),
            "torch_imported": any(m in sys.modules for m in ("torch", "torchvision", "timm"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="folder for the model and held-out images")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device-side", nargs=2, metavar=("MODEL", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device_side:
        print(json.dumps(device_side(*args.device_side)))
        return 0

    import torch
    import torchvision
    from PIL import Image

    import converters

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out = Path(args.out)
    held_dir = out / "heldout"
    held_dir.mkdir(parents=True, exist_ok=True)
    images, labels = digit_images()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    n_test = len(images) // 5
    test_idx, train_idx = order[:n_test], order[n_test:]
    for i in test_idx:
        Image.fromarray(images[i], "L").save(held_dir / f"{i:04d}_label{labels[i]}.png")

    transform = eval_transform()
    print(f"[1/3] workstation: training torchvision resnet18 on {len(train_idx)} real handwritten digits "
          f"(sklearn), {n_test} held out")
    t = time.perf_counter()
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    train(model, images[train_idx], labels[train_idx], transform, epochs=args.epochs)
    print(f"  trained in {time.perf_counter() - t:.0f} s")
    model_path = out / "digits_resnet18.onnx"
    files = sorted(held_dir.glob("*.png"))
    report = converters.export(model, model_path, transform=transform, labels=LABELS, loader_color="l",
                               images=files[:64])
    print(f"  exported {model_path} ({model_path.stat().st_size / 1e6:.1f} MB); verification on 64 images: "
          f"deployed max|dp| {report.deploy_max_abs_diff:.1e}, top-1 agreement {report.deploy_top1_agreement:.0%}")

    with torch.no_grad():
        ref = torch.softmax(model(torch.stack([transform(Image.open(f).convert("L")) for f in files])), 1).numpy()
    truth = np.array([int(f.stem.split("label")[1]) for f in files])

    print("[2/3] device: a fresh Python process that imports edgeinfer only (no torch) predicts the PNG files")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.demo", "--device-side", str(model_path), str(held_dir)],
                          cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, check=True)
    dev = json.loads(proc.stdout.strip().splitlines()[-1])
    got = np.array(dev["scores"], dtype=np.float32)

    print("[3/3] comparison on the held-out digits")
    print(f"  images:                 {len(files)}")
    print(f"  torch accuracy:         {np.mean(ref.argmax(1) == truth):.2%}")
    print(f"  edgeinfer accuracy:     {np.mean(got.argmax(1) == truth):.2%}")
    print(f"  top-1 agreement:        {np.mean(ref.argmax(1) == got.argmax(1)):.2%}")
    print(f"  max |prob difference|:  {np.max(np.abs(ref - got)):.2e}")
    print(f"  device latency/image:   p50 {dev['p50_ms']:.2f} ms, p90 {dev['p90_ms']:.2f} ms "
          f"(decode + preprocess + inference, 1 image)")
    print(f"  device load time:       {dev['load_s']:.2f} s (import + session)")
    print(f"  self-test on device:    {'passed' if dev['self_test']['passed'] else 'FAILED'} "
          f"(max diff {dev['self_test']['max_abs_diff']:.1e})")
    print(f"  torch imported on device side: {dev['torch_imported']}")
    ok = (not dev["torch_imported"]) and dev["self_test"]["passed"] and np.array_equal(ref.argmax(1), got.argmax(1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
