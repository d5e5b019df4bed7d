"""A fleet report from real runs on this machine: one model, several device profiles and precisions.

The model is the "which photo is this?" resnet18 classifier trained here (real weights), exported with the
ImageNet eval transform; fp16 and int8 variants come from ``converters.optimize``. Each device runs what a
device would: ``bench`` (fp32 and the variants), ``check`` (self-test and doctor), ``parity`` (against the
torch model, the variants beside the deployment) and ``tune``:

- ``cpu``: the stock profile;
- ``raspberry-pi-5``: its XNNPACK provider is absent from this onnxruntime build, so it falls back to the CPU
  provider with four threads (a warning, recorded as providers_used);
- ``pi-5-fast-resize`` (the injected outlier, ``pi-5-fast-resize.toml`` here): a Pi 5 whose profile was
  switched to the approximate ``fast`` preprocessing -- a real misconfiguration, really run; its parity and
  self-test differ from the others' and the report flags it first;
- ``pi-5-int8`` (the second injected outlier, ``pi-5-int8.toml``): a Pi 5 profile that loads the int8 variant
  while the others run fp32 -- its self-test (recorded from fp32 at export) fails and its parity differs;
- any arm64 reports committed under ``benchmarks/arm64_*`` (bench/parity/check/tune JSON) are included.

Writes the JSON reports, ``fleet.md`` and ``plots/`` into this folder:

    .venv/bin/python benchmarks/fleet/run.py [--model m.onnx --weights m.pt]  (else trains one, ~1-3 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
import sys

# the test material (tests/material) is imported from the checkout: a script's own folder is on sys.path, not the root
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
DEVICES = (("cpu", "cpu"), ("raspberry-pi-5", "pi5"), (str(HERE / "pi-5-fast-resize.toml"), "pi5-fast"),
           (str(HERE / "pi-5-int8.toml"), "pi5-int8"))


def _photos(folder: Path) -> Path:
    """Real photos as files: the scikit-image and scikit-learn ones, and crops of the training photos."""
    import skimage
    import sklearn
    from skimage import data

    from tests.material.photos import photo_crops

    folder.mkdir(parents=True, exist_ok=True)
    sk = Path(skimage.__file__).parent / "data"
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg", "motorcycle_left.png",
                 "hubble_deep_field.jpg", "brick.png", "color.png"):
        shutil.copy(sk / name, folder / name)
    for name in ("china.jpg", "flower.jpg"):
        shutil.copy(Path(sklearn.__file__).parent / "datasets" / "images" / name, folder / name)
    photo_crops(folder, {n: getattr(data, n)() for n in PHOTOS}, per_photo=2, seed=7)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="an exported photo classifier (.onnx); default: train and export one")
    parser.add_argument("--weights", help="its torch state_dict (resnet18, 6 classes)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()

    import torch
    from skimage import data

    import converters
    from converters.compare import compare
    from tests.material.photos import train_photo_classifier
    from converters.optimize import optimize
    from converters.tune import tune
    from converters.zoo import build, imagenet_eval_transform
    from edgeinfer.tools import fleet
    from edgeinfer.tools.bench import bench
    from edgeinfer.tools.check import check

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = _photos(work / "images")
        if args.model:
            shutil.copy(args.model, work / "photo-classifier.onnx")
            torch_model, _ = build("resnet18", num_classes=len(PHOTOS), weights=args.weights)
        else:
            torch_model = train_photo_classifier("resnet18", [getattr(data, n)() for n in PHOTOS])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converters.export(torch_model, work / "photo-classifier.onnx", transform=imagenet_eval_transform(),
                                  labels=list(PHOTOS), images=[getattr(data, n)() for n in PHOTOS])
        torch_model.eval()
        os.chdir(work)  # the reports name the model files as a device would: by their own name
        model = "photo-classifier.onnx"
        variants = []
        for kind in ("fp16", "int8"):
            optimize(model, f"photo-classifier.{kind}.onnx", kind=kind, calibration=images, force=True)
            variants.append(f"photo-classifier.{kind}.onnx")

        def write(name: str, report: dict) -> None:
            (out / name).write_text(json.dumps(report, indent=2) + "\n")
            print("wrote", out / name, flush=True)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the Pi 5's XNNPACK falls back to the CPU provider here (recorded)
            for device, tag in DEVICES:
                write(f"{tag}.bench.json", bench(model, device=device, batches=(1, 8), images=images, runs=args.runs,
                                                 warmup=3, measure_cold_start=False).to_dict())
                write(f"{tag}.check.json", check(model, images=images, device=device).to_dict())
                write(f"{tag}.parity.json", compare(torch_model, imagenet_eval_transform(), model, images,
                                                    variants=variants if not tag.startswith("pi5-") else (),
                                                    device=device).to_dict())
            for v in variants:  # the variants' speed, on the stock profile
                precision = v.split(".")[1]
                result = bench(v, device="cpu", batches=(1, 8), images=images, runs=args.runs, warmup=3,
                               measure_cold_start=False)
                write(f"cpu-{precision}.bench.json", result.to_dict())
            for device, tag in DEVICES[:2]:
                report = tune(model, device=device, images=images, rounds=20, out_profile=work / f"{tag}.toml")
                write(f"{tag}.tune.json", report.to_dict())
    reports = sorted(out.glob("*.json"))
    arm64 = [p for p in sorted((ROOT / "benchmarks").glob("arm64_*")) for p in ([p] if p.is_file() else p.rglob("*"))
             if p.suffix == ".json"]
    from edgeinfer.tools.reports import SCHEMAS

    for p in arm64:
        try:
            schema = json.loads(p.read_text()).get("schema")
        except (AttributeError, ValueError):
            schema = None
        if schema in SCHEMAS.values():
            reports.append(p)
        else:
            print(f"not a bench/parity/check/tune report of this version, left out: {p} (schema {schema!r})")
    result = fleet.report(reports, out=out / "fleet.md", plots=out / "plots")
    print((out / "fleet.md").read_text())
    for o in result.outliers:
        print("outlier:", o.device, o.model, o.kind, o.message)


if __name__ == "__main__":
    main()
