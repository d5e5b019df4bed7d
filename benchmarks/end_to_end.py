"""edgeinfer end to end vs PyTorch eager end to end vs raw ONNX Runtime, side by side in one run.

For each architecture (torchvision resnet18, mobilenet_v3_small, efficientnet_b0; random weights:
speed does not depend on them), on one decoded 1080p frame, batch 1, the same thread count everywhere:
  - edgeinfer BGR: Model.predict(frame) on the frame as OpenCV gives it (the default input)
  - edgeinfer RGB: Model.predict(rgb, color="rgb") on the same frame as an RGB array
  - raw ORT:       the same Preprocessor + InferenceSession.run on the same session, BGR frame in
  - torch PIL:     transform(PIL image) + model, no_grad   (what users train with)
  - torch v2 uint8: v2 transform on a uint8 tensor + model (torchvision's fast path)
and cold start (fresh process: interpreter, imports, load, first prediction) for edgeinfer and torch.
Each round runs every contender once, in a shuffled order, so machine noise and cache churn hit all
alike; ratios are medians of the ratios within each round. The wrapper's own overhead (Model.predict
over raw ORT with the same preprocessing) is measured twice: in those mixed rounds, and in rounds of
just the two, where torch's allocations and frees do not land between them (they make whichever call
allocates next pay for fresh pages). Writes end_to_end.json.

    .venv/bin/python benchmarks/end_to_end.py [--rounds 30] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

ARCHS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")
NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}

TORCH_COLD = """
import time, sys
t0 = time.perf_counter()
import torch, torchvision
from PIL import Image
from converters.zoo import imagenet_eval_transform
t1 = time.perf_counter()
torch.set_num_threads({threads})
model = torchvision.models.get_model(sys.argv[1], weights=None)
model.load_state_dict(torch.load(sys.argv[2], map_location="cpu", weights_only=True))
model.eval()
tf = imagenet_eval_transform()
t2 = time.perf_counter()
with torch.no_grad():
    torch.softmax(model(tf(Image.open(sys.argv[3]).convert("RGB")).unsqueeze(0)), 1)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def shuffled_rounds(contenders: dict, rounds: int) -> dict[str, list[float]]:
    for fn in contenders.values():
        for _ in range(3):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    rng = random.Random(0)
    for _ in range(rounds):
        order = list(contenders.items())
        rng.shuffle(order)  # no contender always follows the one that just churned the caches
        for key, fn in order:
            t = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - t)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch and ONNX Runtime threads (default: all cores; 1 on a machine others share)")
    args = parser.parse_args()
    import onnxruntime as ort
    import torch
    import torchvision
    from PIL import Image
    from skimage import data
    from torchvision.transforms import v2

    import converters
    import edgeinfer
    from converters.zoo import IMAGENET_MEAN, IMAGENET_STD, imagenet_eval_transform
    from edgeinfer.tools.bench import cold_start, cpu_model

    threads = args.threads
    torch.set_num_threads(threads)
    rgb = cv2.resize(data.astronaut(), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    pil = Image.fromarray(rgb)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    pil_tf = imagenet_eval_transform()
    v2_tf = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jpg = Path(tmp) / "frame.jpg"
        cv2.imwrite(str(jpg), bgr)
        for arch in ARCHS:
            model = torchvision.models.get_model(arch, weights=None).eval()
            onnx_path = Path(tmp) / f"{arch}.onnx"
            weights = Path(tmp) / f"{arch}.pt"
            torch.save(model.state_dict(), weights)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converters.export(model, onnx_path, transform=pil_tf, images=[rgb])
            # ONNX Runtime's worker threads spin after each call by default; alternating contenders would
            # then steal each other's cores. Spinning is off here, for every ORT contender alike.
            deployed = edgeinfer.load(onnx_path, threads=threads, session_config=NO_SPIN)
            # The raw contender calls the very same InferenceSession directly: the difference is the
            # wrapper alone (two sessions of one model differ by more than that on this machine).
            sess = deployed.session
            pre = deployed.preprocessor
            name = deployed.spec.input.name

            def run_edgeinfer():
                deployed.predict(bgr)

            def run_edgeinfer_rgb():
                deployed.predict(rgb, color="rgb")

            def run_raw():
                sess.run(None, {name: pre.batch([bgr])})

            def run_torch_pil():
                with torch.no_grad():
                    torch.softmax(model(pil_tf(pil).unsqueeze(0)), 1)

            def run_torch_v2():
                with torch.no_grad():
                    torch.softmax(model(v2_tf(tensor).unsqueeze(0)), 1)

            contenders = {"edgeinfer": run_edgeinfer, "edgeinfer_rgb": run_edgeinfer_rgb, "raw_ort": run_raw,
                          "torch_pil": run_torch_pil, "torch_v2_uint8": run_torch_v2}
            samples = shuffled_rounds(contenders, args.rounds)
            pair = shuffled_rounds({"edgeinfer": run_edgeinfer, "raw_ort": run_raw}, 2 * args.rounds)
            ms = {k: median_ms(v) for k, v in samples.items()}

            def paired(a: str, b: str, s: dict = samples) -> float:
                # median over rounds of the ratio measured within the same round: robust to drift
                return statistics.median(x / y for x, y in zip(s[a], s[b]))
            ei_cold = cold_start(onnx_path, jpg.read_bytes())
            out = subprocess.run([sys.executable, "-c", TORCH_COLD.format(threads=threads), arch, str(weights), str(jpg)],
                                 capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", TORCH_COLD.format(threads=threads), arch, str(weights), str(jpg)],
                                 capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
            torch_total = time.perf_counter() - start
            imp, ld, first = (float(v) for v in out.stdout.split())
            rows.append({
                "arch": arch, "median_ms": ms,
                "wrapper_overhead": paired("edgeinfer", "raw_ort", pair) - 1.0,
                "wrapper_overhead_mixed_rounds": paired("edgeinfer", "raw_ort") - 1.0,
                "pair_median_ms": {k: median_ms(v) for k, v in pair.items()},
                "speedup_vs_torch_pil": paired("torch_pil", "edgeinfer"),
                "speedup_vs_torch_v2_uint8": paired("torch_v2_uint8", "edgeinfer"),
                "rgb_speedup_vs_torch_pil": paired("torch_pil", "edgeinfer_rgb"),
                "rgb_speedup_vs_torch_v2_uint8": paired("torch_v2_uint8", "edgeinfer_rgb"),
                "cold_start_s": {"edgeinfer": ei_cold,
                                 "torch": {"total": torch_total, "import": imp, "load": ld, "first_prediction": first}},
                "cold_start_ratio": ei_cold["total"] / torch_total,
            })
    result = {"date": time.strftime("%Y-%m-%d"), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
              "threads": threads, "rounds": args.rounds,
              "input": "decoded 1920x1080 frame, batch 1: BGR as OpenCV gives it (primary) and as an RGB array",
              "opencv": cv2.__version__,
              "onnxruntime": ort.__version__, "torch": torch.__version__, "python": platform.python_version(),
              "rows": rows}
    Path(__file__).with_name("end_to_end.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'arch':20s} {'ei BGR':>7s} {'ei RGB':>7s} {'raw ORT':>8s} {'overhead':>9s} {'(mixed)':>8s} "
          f"{'torch PIL':>10s} {'x BGR':>6s} {'x RGB':>6s} {'torch v2':>9s} {'x BGR':>6s} {'x RGB':>6s} "
          f"{'cold ei s':>9s} {'cold torch s':>12s} {'ratio':>6s}")
    for r in rows:
        m = r["median_ms"]
        print(f"{r['arch']:20s} {m['edgeinfer']:7.2f} {m['edgeinfer_rgb']:7.2f} {m['raw_ort']:8.2f} "
              f"{r['wrapper_overhead']:+9.1%} {r['wrapper_overhead_mixed_rounds']:+8.1%} {m['torch_pil']:10.2f} "
              f"{r['speedup_vs_torch_pil']:6.2f} {r['rgb_speedup_vs_torch_pil']:6.2f} {m['torch_v2_uint8']:9.2f} "
              f"{r['speedup_vs_torch_v2_uint8']:6.2f} {r['rgb_speedup_vs_torch_v2_uint8']:6.2f} "
              f"{r['cold_start_s']['edgeinfer']['total']:9.2f} {r['cold_start_s']['torch']['total']:12.2f} "
              f"{r['cold_start_ratio']:6.2f}")


if __name__ == "__main__":
    main()
