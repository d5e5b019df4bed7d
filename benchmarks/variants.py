"""Optimised variants measured, not assumed: `converters.tune` on models with weights trained here.

For resnet18, mobilenet_v3_small and efficientnet_b0, trained as "which photo is this?" classifiers on
scikit-image photos (real weights: agreement figures mean something, unlike on random weights), exported
with the ImageNet eval transform, then tuned on crops of the same photos: fp32 / fp16 / int8 (QDQ,
per-channel, calibrated through the model's own preprocessing) x the CPU provider x 1 and 2 threads,
timed side by side and judged by the classifier's gate against fp32 (probabilities within 1e-3, the same top-1;
variants.json in the repository was written with the earlier 99 % top-1 gate). Writes variants.json.

    .venv/bin/python benchmarks/variants.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

from skimage import data
import sys

# the test material (tests/material) is imported from the checkout: a script's own folder is on sys.path, not the root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARCHS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    import converters
    from tests.material.photos import photo_crops, train_photo_classifier
    from converters.tune import tune
    from converters.zoo import imagenet_eval_transform
    from edgeinfer.tools.bench import cpu_model

    photos = {n: getattr(data, n)() for n in PHOTOS}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        crops = photo_crops(Path(tmp) / "crops", photos, per_photo=6)
        for arch in ARCHS:
            model = train_photo_classifier(arch, list(photos.values()))
            path = Path(tmp) / f"{arch}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converters.export(model, path, transform=imagenet_eval_transform(), labels=list(PHOTOS),
                                  images=list(photos.values()))
            report = tune(path, device="cpu", images=crops, rounds=args.rounds)
            results.append({"arch": arch, **report.to_dict()})
            print(f"\n{arch}: chosen {report.chosen.precision if report.chosen else None}")
            for r in report.rows:
                print(f"  {r.engine:11s} {r.precision:5s} {r.provider:22s} threads {r.threads}  {r.median_ms:7.2f} ms  "
                      f"top-1 {r.gate['top1_agreement']:6.1%}  max|dp| {r.gate['max_abs_diff']:.3f}"
                      f"{'' if r.passes else '  FAILS GATE'}")
    Path(__file__).with_name("variants.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
         "rounds": args.rounds, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
