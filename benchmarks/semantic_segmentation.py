"""Semantic segmentation on 1080p frames: edgeinfer's class map vs the reference post-processing.

    python benchmarks/semantic_segmentation.py [--rounds 20] [--json benchmarks/semantic_segmentation.json]

Two tables, each measured side by side in shuffled rounds on the same inputs (medians; ratios are medians of
the within-round ratios):

1. **Post-processing alone**, logits -> class map of a 1920x1080 frame, for 4 classes (the segmenter trained
   here, its real logits on real photos), 21 (Pascal VOC) and 150 (ADE20K) classes (smooth logits at 1/4 and
   1/8 of the input, as SegFormer and DeepLab give): edgeinfer's :func:`edgeinfer.tasks.segmentation.class_map` vs
   the reference every training tool runs (``F.interpolate(bilinear, align_corners=False)`` to the frame, then
   argmax; Hugging Face's ``post_process_semantic_segmentation``), with the peak memory each allocates.
2. **End to end** on a 1080p JPEG file: the torchvision LR-ASPP trained here (``tests/material/semseg.py``),
   ``edgeinfer.load(...).predict(path)`` vs the pipeline a user writes from the training code (PIL open,
   the preset transform, the same ONNX Runtime session, the reference post-processing).
Both contenders' maps are compared; agreement is printed beside the times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import sys

# the test material (tests/material) is imported from the checkout: a script's own folder is on sys.path, not the root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the cache the tests train the segmenter into (tests/conftest.py)
os.environ.setdefault("EDGEINFER_CACHE", str(Path(__file__).resolve().parent.parent / "tests" / "data" / "detectors"))


def _median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def _peak_mb(fn) -> tuple[object, float]:
    tracemalloc.start()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", default=str(Path(__file__).with_name("semantic_segmentation.json")))
    args = ap.parse_args()

    import cv2
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from skimage import data

    import edgeinfer
    from converters import export_segmenter
    from tests.material import semseg
    from edgeinfer.tasks.segmentation import class_map

    torch.set_num_threads(os.cpu_count() or 1)
    hw = (1080, 1920)
    photos = {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea()}
    tmp = Path(tempfile.mkdtemp(prefix="edgeinfer-segbench-"))
    files = {}
    for name, rgb in photos.items():
        files[name] = tmp / f"{name}.jpg"
        cv2.imwrite(str(files[name]), cv2.resize(rgb[..., ::-1], hw[::-1], interpolation=cv2.INTER_CUBIC),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
    model = semseg.train()
    onnx = tmp / "lraspp.onnx"
    export_segmenter(model, onnx, transform=semseg.transform(), labels=semseg.LABELS,
                     images=[np.asarray(Image.open(f).convert("RGB")) for f in files.values()])
    deployed = edgeinfer.load(onnx)

    # -- 1. post-processing alone ---------------------------------------------------------------------------
    rng = np.random.default_rng(0)
    cases = {}
    for name, path in files.items():  # the trained model's own logits on real photos
        x = deployed.preprocess(str(path))[None]
        cases[f"4 classes (LR-ASPP trained here), {name}"] = deployed.run(x)[0]
    for classes, stride, smooth in ((21, 8, 16), (150, 4, 32)):
        lh, lw = 512 // stride, 512 // stride
        low = rng.normal(size=(classes, lh // smooth * 4 + 2, lw // smooth * 4 + 2)).astype(np.float32)
        cases[f"{classes} classes, logits 1/{stride} of 512x512"] = np.stack(
            [cv2.resize(c, (lw, lh), interpolation=cv2.INTER_CUBIC) for c in low])
    post_rows = []
    for label, logits in cases.items():
        c, lh, lw = logits.shape
        scale = (lh / hw[0], lw / hw[1])

        def ours():
            return class_map(logits, hw, scale, (0.0, 0.0))

        def reference():
            t = torch.from_numpy(logits)[None]
            return F.interpolate(t, size=hw, mode="bilinear", align_corners=False).argmax(1)[0].numpy()

        a, mem_a = _peak_mb(ours)
        b, mem_b = _peak_mb(reference)
        t_ours, t_ref = [], []
        for _ in range(args.rounds):
            order = [("ours", ours, t_ours), ("ref", reference, t_ref)]
            random.shuffle(order)
            for _, fn, times in order:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        post_rows.append({"case": label, "classes": c, "logits_hw": [lh, lw],
                          "edgeinfer_ms": statistics.median(t_ours), "reference_ms": statistics.median(t_ref),
                          "speedup": _median_ratio(t_ref, t_ours), "agreement": float(np.mean(a == b)),
                          "edgeinfer_peak_mb": round(mem_a, 1), "reference_peak_mb_numpy_side": round(mem_b, 1),
                          "reference_upsampled_logits_mb": round(c * hw[0] * hw[1] * 4 / 2**20, 1)})
        r = post_rows[-1]
        print(f"{label:48s} edgeinfer {r['edgeinfer_ms']:8.1f} ms  reference {r['reference_ms']:8.1f} ms  "
              f"x{r['speedup']:.2f}  agree {r['agreement']:.6f}  "
              f"upsampled logits {r['reference_upsampled_logits_mb']:.0f} MB vs our peak {mem_a:.0f} MB")

    # -- 2. end to end on a 1080p JPEG ----------------------------------------------------------------------
    transform = semseg.transform()
    session = deployed.session
    name_in, name_out = deployed.spec.input.name, deployed.spec.output.name

    def naive(path):
        img = Image.open(path).convert("RGB")
        x = transform(img)[None].numpy()
        logits = torch.from_numpy(session.run([name_out], {name_in: x})[0])
        return F.interpolate(logits, size=(img.height, img.width), mode="bilinear",
                             align_corners=False).argmax(1)[0].numpy()

    e2e_ours, e2e_ref, agree = [], [], []
    paths = list(files.values())
    for i in range(args.rounds):
        path = str(paths[i % len(paths)])
        order = [("ours", lambda: deployed.predict(path).class_map, e2e_ours), ("ref", lambda: naive(path), e2e_ref)]
        random.shuffle(order)
        maps = {}
        for key, fn, times in order:
            t0 = time.perf_counter()
            maps[key] = fn()
            times.append((time.perf_counter() - t0) * 1e3)
        agree.append(float(np.mean(maps["ours"] == maps["ref"])))
    stages = {}
    from edgeinfer.pipeline.images import read

    for _ in range(5):
        t0 = time.perf_counter()
        frame = read(paths[0], exif_orientation=False)
        t1 = time.perf_counter()
        prepared = deployed.prepare([frame])
        t2 = time.perf_counter()
        out = deployed.infer(prepared)
        t3 = time.perf_counter()
        deployed.finish(prepared, out)
        t4 = time.perf_counter()
        for k, v in (("decode", t1 - t0), ("preprocess", t2 - t1), ("inference", t3 - t2), ("class_map", t4 - t3)):
            stages.setdefault(k, []).append(v * 1e3)
    e2e = {"edgeinfer_ms": statistics.median(e2e_ours), "reference_ms": statistics.median(e2e_ref),
           "speedup": _median_ratio(e2e_ref, e2e_ours), "min_agreement": min(agree),
           "edgeinfer_stages_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()}}
    print(f"end to end, 1080p JPEG, LR-ASPP: edgeinfer {e2e['edgeinfer_ms']:.1f} ms, PIL + preset + ORT + "
          f"interpolate/argmax {e2e['reference_ms']:.1f} ms, x{e2e['speedup']:.2f}, agreement >= "
          f"{e2e['min_agreement']:.6f}; edgeinfer stages {e2e['edgeinfer_stages_ms']}")
    result = {"benchmark": "semantic_segmentation", "rounds": args.rounds, "frame_hw": list(hw),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "onnxruntime": __import__("onnxruntime").__version__, "opencv": cv2.__version__},
              "postprocess": post_rows, "end_to_end": e2e}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
