"""The arm64 side of the parity suite: runs inside the arm64 root (no torch), against the x86 bundle.

For every preprocessing case of tests/arm64/references.py: edgeinfer's pixels here against the
reference library's on x86 and against edgeinfer's own x86 pixels, in levels of 255; the C kernel
against the numpy fallback on the same inputs (they must be equal); decoding of the photo files; the
trained models' probabilities against torch on x86 (fp32, fp16 and int8 variants made on x86); the
self-test vector; ``edgeinfer check``; the raspberry-pi-5 profile; optionally ``edgeinfer bench`` and
``tune``. Writes one JSON file.

    python tests/arm64/device.py --bundle /opt/edgeinfer-parity --out result.json [--tools]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

import edgeinfer
from edgeinfer import Preprocessor, Spec
from edgeinfer.pipeline import resample
from edgeinfer.tools.bench import emulation
from edgeinfer.pipeline.images import decode
from edgeinfer.requirements import versions


@contextlib.contextmanager
def numpy_kernel():
    """The numpy fallback instead of the C kernel, for the same call (what a machine without gcc runs)."""
    saved, resample._native = resample._native, None
    try:
        yield
    finally:
        resample._native = saved


def levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) * 255.0)


def preprocess(bundle: Path, manifest: dict) -> list[dict]:
    rows = []
    for e in manifest["preprocess"]:
        bgr = np.load(bundle / e["input"])
        ref = np.load(bundle / e["reference"])
        spec = Spec.from_dict(e["spec"])
        row = {"family": e["family"], "case": e["case"]}
        for mode, rel in e["x86"].items():
            pre = Preprocessor(spec, mode=mode)
            got = pre(bgr, color="bgr")
            with numpy_kernel():
                fallback = Preprocessor(spec, mode=mode)(bgr, color="bgr")
            x86 = np.load(bundle / rel)
            row[mode] = {"vs_reference_levels": levels(got, ref), "vs_x86_edgeinfer_levels": levels(got, x86),
                         "x86_vs_reference_levels": levels(x86, ref),
                         "pixels_differing_from_x86": int(np.count_nonzero(got != x86)),
                         # integer paths: equal; float32 paths: the numpy fallback sums through BLAS
                         # (another order), so float32 rounding apart
                         "c_kernel_equals_numpy": bool(np.array_equal(got, fallback)),
                         "c_vs_numpy_levels": levels(got, fallback)}
        rows.append(row)
    return rows


def decoding(bundle: Path, manifest: dict) -> list[dict]:
    rows = []
    for e in manifest["decode"]:
        data = (bundle / e["file"]).read_bytes()
        got = decode(data, exif_orientation=False, source=e["file"])
        rows.append({"file": e["file"], "vs_x86_opencv_levels": float(np.abs(got.astype(int) - np.load(bundle / e["x86_opencv"])).max()),
                     "vs_x86_pil_levels": float(np.abs(got.astype(int) - np.load(bundle / e["x86_pil"])).max())})
    return rows


def agreement(got: np.ndarray, ref: np.ndarray) -> dict:
    return {"max_abs_dp": float(np.max(np.abs(got.astype(np.float64) - ref))),
            "top1_agreement": float(np.mean(got.argmax(1) == ref.argmax(1)))}


# Floating point is emulated op by op in qemu (softfloat helpers), integer SIMD is not: measured here,
# ResNet-18 at 224 takes 8-45 s per image in fp32 and 25-100 s in fp16 on the A76 but 1-3 s in int8
# (depending on the machine's load), MobileNetV3-small ~30x less. So the big model's float variants
# are checked on a few images, everything else on all.
IMAGES_PER_RUN = {("resnet18", "fp32"): 3, ("resnet18", "fp16"): 2}
CHECK_IMAGES = 4


def models(bundle: Path, manifest: dict, work: Path) -> list[dict]:
    files = [bundle / rel for rel in manifest["images"]]
    out = []
    for m in manifest["models"]:
        torch_p = np.load(bundle / m["torch_probs"])
        row = {"name": m["name"], "images": len(files)}
        fp32 = None
        for kind in ("fp32", "fp16", "int8"):
            n = IMAGES_PER_RUN.get((m["name"], kind), len(files))
            path = bundle / (m["path"] if kind == "fp32" else m["variants"][kind])
            model = edgeinfer.load(path)
            t0 = time.perf_counter()
            got = np.stack([model.predict(f).scores for f in files[:n]])
            fp32 = got if kind == "fp32" else fp32
            k = min(len(fp32), n)
            row[kind] = {"images": n, "vs_torch_x86": agreement(got, torch_p[:n]),
                         "vs_same_model_x86": agreement(got, np.load(bundle / m["x86_probs"][kind])[:n]),
                         "vs_fp32_here": agreement(got[:k], fp32[:k]), "providers": list(model.providers),
                         "seconds": round(time.perf_counter() - t0, 1)}
            if kind == "fp32":
                st = model.self_test()
                row["self_test"] = {"passed": st.passed, "max_abs_diff": st.max_abs_diff, "atol": st.atol}
            print(f"device: {m['name']} {kind} on {n} images: {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)
        row["check"] = check(bundle, m, files, work)
        out.append(row)
    return out


def check(bundle: Path, m: dict, files: list[Path], work: Path) -> dict:
    """The deployment doctor, as a user runs it, on a few images of different photos (one scene's crops
    alone would rightly look like a collapsed model)."""
    image_dir = work / "check-images"
    image_dir.mkdir(exist_ok=True)
    for f in image_dir.iterdir():
        f.unlink()
    step = max(1, len(files) // CHECK_IMAGES)
    for f in files[::step][:CHECK_IMAGES]:
        (image_dir / f.name).write_bytes(f.read_bytes())
    report = work / f"check-{m['name']}.json"
    report.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "edgeinfer.cli", "check", str(bundle / m["path"]), "--images",
                           str(image_dir), "--json", str(report)], capture_output=True, text=True)
    findings = json.loads(report.read_text()).get("findings", []) if report.exists() else None
    return {"exit_code": proc.returncode, "images": sorted(f.name for f in image_dir.iterdir()),
            "findings": [f.get("code") for f in findings or []], "output": proc.stdout.strip().splitlines()[-3:]}


def recheck(bundle: Path, manifest: dict, previous: dict, work: Path) -> list[dict]:
    """Only the doctor again, into the model rows an earlier run measured."""
    files = [bundle / rel for rel in manifest["images"]]
    rows = {r["name"]: r for r in previous["models"]}
    for m in manifest["models"]:
        rows[m["name"]]["check"] = check(bundle, m, files, work)
    return list(rows.values())


def profile(bundle: Path, manifest: dict) -> dict:
    """A model loaded with the raspberry-pi-5 profile and the ONNX Runtime wheel pip gives on arm64: what
    it asked for, what runs, and the fallback warning a user sees."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = edgeinfer.load(bundle / manifest["models"][-1]["path"], device="raspberry-pi-5")
        scores = model.predict(bundle / manifest["images"][0]).scores
    return {"available_providers": ort.get_available_providers(), "requested": list(model.requested_providers),
            "used": list(model.providers), "predicts": bool(np.isfinite(scores).all()),
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}


def tools(bundle: Path, manifest: dict, work: Path) -> dict:
    """``edgeinfer bench`` and ``tune`` as a user runs them on the device (small runs: emulation is slow)."""
    # tune writes its chosen variant beside the model (model.int8.onnx): work on a copy, never on the bundle
    model = work / Path(manifest["models"][-1]["path"]).name
    model.write_bytes((bundle / manifest["models"][-1]["path"]).read_bytes())
    holdout = work / "tune-images"
    holdout.mkdir(exist_ok=True)
    for rel in manifest["images"][:6]:
        (holdout / Path(rel).name).write_bytes((bundle / rel).read_bytes())
    out = {}
    t0 = time.perf_counter()
    bench_json = work / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "edgeinfer.cli", "bench", str(model), "--device", "raspberry-pi-5",
                           "--runs", "5", "--warmup", "1", "--no-cold-start", "--json", str(bench_json)],
                          capture_output=True, text=True)
    out["bench"] = {"exit_code": proc.returncode, "output": proc.stdout.strip().splitlines()[:4],
                    "stderr_tail": proc.stderr.strip().splitlines()[-3:], "seconds": round(time.perf_counter() - t0, 1),
                    "emulated": json.loads(bench_json.read_text())["environment"].get("emulated")
                    if bench_json.exists() else None}
    t0 = time.perf_counter()
    tuned = model.parent / f"{model.stem}.raspberry-pi-5-tuned.toml"
    proc = subprocess.run([sys.executable, "-m", "edgeinfer.cli", "tune", str(model), "--device", "raspberry-pi-5",
                           "--images", str(holdout), "--rounds", "3", "--out-profile", str(work / "tuned.toml"),
                           "--json"], capture_output=True, text=True)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    out["tune"] = {"exit_code": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                   "emulated": report.get("emulated") if report else None,
                   "rows": [{k: r[k] for k in ("engine", "engine_version", "precision", "provider", "threads", "passes", "gate")}
                            for r in report["rows"]] if report else None,
                   "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
    tuned.unlink(missing_ok=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tools", action="store_true", help="also run edgeinfer bench and tune")
    parser.add_argument("--only", choices=("preprocess", "check"), help="a subset; check: only `edgeinfer check` again")
    parser.add_argument("--resume", action="store_true", help="keep the parts an interrupted run already wrote")
    args = parser.parse_args()
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    work = args.out.parent / (args.out.stem + "-work")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    v = versions()
    result = {"fingerprint": manifest["fingerprint"], "qemu_cpu": os.environ.get("QEMU_CPU"),
              "machine": platform.machine(), "emulated": emulation(),
              "arm64": {k: v[k] for k in ("python", "numpy", "opencv", "onnxruntime", "resample_kernel")},
              "c_kernel_module": getattr(resample._native, "__file__", None)}
    parts = [("preprocess", preprocess)]
    if args.only != "preprocess":
        parts += [("decode", decoding), ("models", lambda b, m: models(b, m, work)),
                  ("raspberry_pi_5_profile", profile)] + ([("tools", lambda b, m: tools(b, m, work))] if args.tools else [])
    previous = json.loads(args.out.read_text()) if (args.resume or args.only == "check") and args.out.exists() else {}
    if previous.get("fingerprint") != manifest["fingerprint"] or previous.get("qemu_cpu") != result["qemu_cpu"]:
        previous = {}
    if args.resume and not previous.get("partial"):
        previous = {}  # a complete run is measured again; only an interrupted one resumes
    if args.only == "check":
        previous["models"] = recheck(args.bundle, manifest, previous, work)
        args.out.write_text(json.dumps(previous, indent=1) + "\n")
        print(f"device: checks redone into {args.out}", file=sys.stderr)
        return
    for key, fn in parts:
        if key in previous:
            result[key] = previous[key]
            print(f"device: {key} kept from the previous run", file=sys.stderr, flush=True)
            continue
        t = time.perf_counter()
        result[key] = fn(args.bundle, manifest)
        print(f"device: {key} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        args.out.write_text(json.dumps({**result, "partial": True}, indent=1) + "\n")  # a stopped run resumes here
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"device: {len(result['preprocess'])} preprocessing cases, {result['seconds']} s, written to {args.out}")


if __name__ == "__main__":
    main()
