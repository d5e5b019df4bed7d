"""The speed orderings edgeinfer promises, checked side by side in one run; exits 1 when one is broken.

Not a timed test: absolute times depend on the machine, the ratios between contenders measured in the
same rounds do not (much). On a 1080p frame straight from OpenCV (BGR, the default input) and the same
frame as an RGB array, through torchvision's ImageNet eval transform (Resize(256), CenterCrop(224),
ToTensor, Normalize), it checks:

  * fast mode is not slower than exact mode (BGR and RGB);
  * exact mode is not slower than torchvision's PIL pipeline (BGR frame in; PIL image in);
  * ``Model.predict`` costs at most 25 % more than raw ONNX Runtime plus the same preprocessing
    (mobilenet_v3_small, exported here; one ORT thread).

Each round runs every contender once in a shuffled order (the preprocessing contenders in one group,
the model pair in another); a ratio is the median over rounds of the ratio within a round. A check fails only when its ordering is broken by a wide margin (LIMITS), so the
noise of a shared CI machine does not fail it. Runs in well under a minute.

    .venv/bin/python benchmarks/ratio_guard.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

# the same shuffled-round timing and within-round ratios as the published tables
from preprocess_parity import paired, rounds

# (slower contender, faster contender, the most the first may cost relative to the second)
LIMITS = (
    ("fast BGR", "exact BGR", 1.10),
    ("fast RGB", "exact RGB", 1.10),
    ("exact BGR", "torchvision PIL", 1.00),
    ("exact RGB", "torchvision PIL", 1.00),
    ("Model.predict", "raw ORT + same preprocessing", 1.25),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    started = time.perf_counter()
    import torch
    import torchvision
    from PIL import Image
    from skimage import data

    import converters
    import edgeinfer
    from converters.zoo import imagenet_eval_transform

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rgb = cv2.resize(data.astronaut(), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # what cv2.VideoCapture.read / cv2.imread give
    pil = Image.fromarray(rgb)
    tf = imagenet_eval_transform()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "mobilenet_v3_small.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converters.export(torchvision.models.mobilenet_v3_small(weights=None).eval(), onnx_path, transform=tf,
                              images=[rgb])
        model = edgeinfer.load(onnx_path, threads=1)
        fast = edgeinfer.Preprocessor(model.spec, mode="fast")
        exact = model.preprocessor
        sess, name = model.session, model.spec.input.name
        # Two groups, each in its own shuffled rounds: the wrapper's overhead is measured against raw ORT
        # alone, without torch's allocations between the two (they cost whoever allocates next).
        samples = rounds({
            "torchvision PIL": lambda: tf(pil),
            "exact BGR": lambda: exact(bgr),
            "exact RGB": lambda: exact(rgb, color="rgb"),
            "fast BGR": lambda: fast(bgr),
            "fast RGB": lambda: fast(rgb, color="rgb"),
        }, args.rounds)
        samples.update(rounds({
            "Model.predict": lambda: model.predict(bgr),
            "raw ORT + same preprocessing": lambda: sess.run(None, {name: exact.batch([bgr])}),
        }, 2 * args.rounds))
    print(f"ratio guard: {args.rounds} shuffled rounds (model pair: {2 * args.rounds}), 1080p frame, one thread; "
          f"edgeinfer {edgeinfer.__file__}")
    print(f"{'contender':30s} {'median ms':>9s}")
    for key, s in samples.items():
        print(f"{key:30s} {statistics.median(s) * 1e3:9.2f}")
    failed = 0
    print(f"\n{'check (time ratio, median of rounds)':62s} {'ratio':>6s} {'limit':>6s}")
    for slow, quick, limit in LIMITS:
        r = paired(samples, slow, quick)
        ok = r <= limit
        failed += not ok
        print(f"{slow + ' / ' + quick:62s} {r:6.2f} {limit:6.2f}  {'ok' if ok else 'FAIL'}")
    print(f"\n{'FAILED' if failed else 'passed'}: {failed} of {len(LIMITS)} orderings broken "
          f"({time.perf_counter() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
