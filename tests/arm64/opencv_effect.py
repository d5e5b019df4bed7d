"""Inside the arm64 root: what OpenCV's 1-level differences from x86 do to a trained model's outputs.

For the OpenCV cases whose output is the classifiers' 224x224 input and whose arm64 pixels differ from
x86 (the self-test image and a 1080p frame, bicubic and area), runs the x86 reference pixels and this
machine's pixels through the same trained MobileNetV3 (ImageNet normalisation, softmax) and prints the
largest probability change beside the self-test tolerance of the exported models.

    ./edge arm run /opt/venv/bin/python /src/edgeinfer/tests/arm64/opencv_effect.py
"""

from __future__ import annotations

import json
import os

import numpy as np

import edgeinfer
from edgeinfer import Preprocessor, Spec

BUNDLE = "/opt/edgeinfer-parity"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def main() -> None:
    manifest = json.load(open(f"{BUNDLE}/manifest.json"))
    model = edgeinfer.load(f"{BUNDLE}/models/mobilenet_v3_small.onnx")
    atol = model.spec.self_test.atol
    for e in manifest["preprocess"]:
        if e["family"] not in ("OpenCV bicubic", "OpenCV area", "OpenCV bilinear") or "224" not in e["case"].split("->")[-1]:
            continue
        here = Preprocessor(Spec.from_dict(e["spec"]))(np.load(f"{BUNDLE}/{e['input']}"), color="bgr")
        x86 = np.load(f"{BUNDLE}/{e['reference']}")
        probs = [np.exp(z - z.max()) / np.exp(z - z.max()).sum()
                 for z in model.run(np.stack([(here - MEAN) / STD, (x86 - MEAN) / STD]).astype(np.float32))]
        print(json.dumps({"qemu_cpu": os.environ.get("QEMU_CPU"), "family": e["family"], "case": e["case"],
                          "pixels_differing": int(np.count_nonzero(here != x86)),
                          "max_levels": float(np.abs(here - x86).max() * 255),
                          "max_abs_dp_mobilenet_v3_small": float(np.abs(probs[0] - probs[1]).max()),
                          "same_top1": bool(probs[0].argmax() == probs[1].argmax()), "self_test_atol": atol}))


if __name__ == "__main__":
    main()
