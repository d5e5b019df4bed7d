"""The ``nvidia-gpu`` profile measured on a real NVIDIA GPU: parity with the CPU provider, fp16, latency.

Two halves, because the GPU machine has no Ultralytics and should not need torch:

    .venv/bin/python benchmarks/gpu_providers.py prepare DIR     # workstation: torch, ultralytics
    python benchmarks/gpu_providers.py run DIR [--json OUT]      # device: numpy, cv2, onnxruntime(-gpu)
    python benchmarks/gpu_providers.py table OUT                 # the README table from the JSON

``prepare`` writes trained models as ONNX files and their fp16 variants (made on the workstation with the
conversion of ``edgeinfer fp16``: ONNX Runtime's float16 conversion, float32 inputs and outputs kept), and
a manifest with their sha256. ``run`` makes a variant that did not travel (to save transfer) by the same
conversion and records whether its bytes equal the workstation's:

- a classifier: torchvision ResNet-18 trained here as the "which photo is this?" classifier of
  ``../shared/DATA.md`` (real weights), exported by ``converters.export`` with the ImageNet eval transform;
- the committed shape detectors of ``tests/data/detectors/shapes`` (YOLO11n detect, segment, pose, obb),
  exported by Ultralytics' exporter with a dynamic axis (so batches larger than 1 run as one call).

``run`` loads each file with ``edgeinfer.load(path, device="nvidia-gpu")`` and ``device="cpu"`` and measures
on real photos (the bundled scikit-image / scikit-learn photos; the detectors' own test frames, shapes drawn
on held-out photos, from ``tests.material.shapes.test_frames``, which needs no torch):

- the providers each session really got, and every fallback warning edgeinfer raised;
- parity, GPU vs CPU provider on the same prepared input: raw output max |diff|; classifier max |dp| and
  top-1 agreement; detectors: detections matched one to one (same class, best IoU), their minimum IoU and
  max |d confidence|;
- fp16 (on the GPU) against fp32 on the CPU provider, the same figures;
- latency, medians and p90 after warm-up: ``session.run`` on a prepared batch (host arrays in and out, as
  ``Model.infer`` does: the copies to and from the GPU are inside) at batch 1 and a larger batch, and end to
  end ``Model.predict`` on 1080p BGR frames (preprocessing on the CPU, inference, postprocessing);
- TensorRT: whether this ONNX Runtime build lists it and whether a session with it starts.

On an H100 the whole run took about 10 minutes, most of it in the detectors' parity passes: the first call
of a CUDA session at each new input shape includes cuDNN's algorithm search (the profile asks for
EXHAUSTIVE), and each detector meets 5 shapes in 2 GPU sessions. Results and how they were obtained:
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the checkout's edgeinfer and converters
    sys.path.insert(0, str(ROOT))

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
DETECTORS = ("detect", "segment", "pose", "obb")
CLASSIFIER = "resnet18"
BATCH = {"classify": 32, "detect": 8}
FRAME_SEEDS = (1234, 1235, 1236)  # tests.material.shapes.test_frames seeds: 12 frames per detector task


# -- workstation ---------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fp16_variant(src: Path, dst: Path) -> None:
    """Write the fp16 variant of ``src`` to ``dst``: ``edgeinfer fp16``'s conversion, for any ONNX file, metadata kept.

    ``converters.optimize.optimize`` checks agreement with ``predict(...).scores``, which a detector has
    not; the agreement of these variants is what ``run`` measures instead.
    """
    import onnx

    from converters.optimize import _convert

    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    proto = _convert("fp16", src, None, [], dst.parent)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    dst.write_bytes(proto.SerializeToString())


def prepare(out: Path) -> None:
    """Write the trained models, their fp16 variants and ``manifest.json`` (sha256, frame digests) into ``out``."""
    from skimage import data

    import converters
    from tests.material import shapes
    from tests.material.photos import train_photo_classifier
    from converters.zoo import imagenet_eval_transform

    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("EDGEINFER_CACHE", str(ROOT / "tests" / "data" / "detectors"))
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    photos = {n: getattr(data, n)() for n in PHOTOS}
    model = train_photo_classifier(CLASSIFIER, list(photos.values()))
    path = out / f"{CLASSIFIER}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converters.export(model, path, transform=imagenet_eval_transform(), labels=list(PHOTOS),
                          images=list(photos.values()))
    files[CLASSIFIER] = {"task": "classify", "fp32": path.name}
    for target in DETECTORS:
        weights = shapes.train(target)  # the committed weights: found in the cache, not trained
        path = shapes.export(weights, out, variants=["raw-dynamic"], batch=BATCH["detect"])["raw-dynamic"]
        files[target] = {"task": target, "fp32": path.name}
    for name, entry in files.items():
        src = out / entry["fp32"]
        dst = src.with_name(f"{src.stem}.fp16{src.suffix}")
        fp16_variant(src, dst)
        entry["fp16"] = dst.name
    frames = {t: {f"{seed}/{k}": hashlib.sha256(v.image.tobytes()).hexdigest()[:16]
                  for seed in FRAME_SEEDS for k, v in shapes.test_frames(t, seed=seed).items()} for t in DETECTORS}
    manifest = {"files": files, "sha256": {p.name: _sha256(p) for p in sorted(out.glob("*.onnx"))},
                "frames_sha256_16": frames, "made_on": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for p in sorted(out.glob("*.onnx")):
        print(f"{p.name}: {p.stat().st_size / 1e6:.1f} MB")


# -- device --------------------------------------------------------------------------------------------
def _timed(fn: Callable[[], Any], *, warmup: int, rounds: int, budget_s: float) -> dict[str, Any]:
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
        if time.perf_counter() - start > budget_s and len(times) >= 5:
            break
    return {"median_ms": round(statistics.median(times), 3), "p90_ms": round(float(np.percentile(times, 90)), 3),
            "n": len(times)}


def _load(path: Path, device: str):
    import edgeinfer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        model = edgeinfer.load(path, device=device)
        load_s = time.perf_counter() - t
    notes = sorted({f"{w.category.__name__}: {str(w.message)[:400]}" for w in caught})
    # the options in effect: ONNX Runtime's own retry after a provider fails to start drops the profile's
    options = model.session.get_provider_options().get(model.providers[0], {})
    keep = ("device_id", "cudnn_conv_algo_search", "arena_extend_strategy", "trt_fp16_enable")
    return model, {"device": device, "providers": list(model.providers), "load_s": round(load_s, 3),
                   "options": {k: v for k, v in options.items() if k in keep}, "warnings": notes}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def compare_detections(ref: list, got: list) -> dict[str, Any]:
    """Detections matched one to one per frame (same class, highest IoU first): counts, min IoU, max |dconf|."""
    n_ref = n_got = matched = 0
    ious, dconf = [], []
    for a, b in zip(ref, got):
        n_ref, n_got = n_ref + len(a), n_got + len(b)
        if not len(a) or not len(b):
            continue
        iou = _iou(a.xyxy, b.xyxy) * (a.class_id[:, None] == b.class_id[None, :])
        used_a, used_b = set(), set()
        for flat in np.argsort(-iou, axis=None):
            i, j = np.unravel_index(flat, iou.shape)
            if iou[i, j] < 0.5:
                break
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            ious.append(float(iou[i, j]))
            dconf.append(abs(float(a.confidence[i]) - float(b.confidence[j])))
        matched += len(used_a)
    return {"detections_ref": n_ref, "detections": n_got, "matched": matched,
            "min_iou": round(min(ious), 5) if ious else None, "max_abs_dconf": round(max(dconf), 6) if dconf else None}


def compare_scores(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    return {"max_abs_dp": float(diff.max()), "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "n": int(len(ref))}


def _classifier_inputs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real photos as BGR frames: random crops (what a camera sees of the scenes) and 1080p frames."""
    import cv2
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [getattr(data, n)() for n in PHOTOS] + list(load_sample_images().images)
    photos = [np.repeat(p[..., None], 3, 2) if p.ndim == 2 else p[..., :3] for p in photos]
    rng = np.random.default_rng(0)
    crops = []
    for p in photos:
        for _ in range(8):
            h, w = p.shape[:2]
            s = int(min(h, w) * rng.uniform(0.5, 1.0))
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crops.append(np.ascontiguousarray(p[y:y + s, x:x + s, ::-1]))
    frames = [np.ascontiguousarray(cv2.resize(p, (1920, 1080), interpolation=cv2.INTER_LINEAR)[..., ::-1])
              for p in photos]
    return crops, frames


def _detector_inputs(task: str) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    from tests.material import shapes

    frames = {f"{seed}/{k}": v.image for seed in FRAME_SEEDS for k, v in shapes.test_frames(task, seed=seed).items()}
    return frames, [f for k, f in frames.items() if k.endswith("1080p")]


def _run_env() -> dict[str, Any]:
    import onnxruntime as ort

    from edgeinfer import __version__, providers
    from edgeinfer.tools import bench
    from edgeinfer.pipeline import resample

    env: dict[str, Any] = {
        "onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__, "edgeinfer": __version__,
        "available_providers": ort.get_available_providers(), "python": platform.python_version(),
        "cpu": bench.cpu_model(), "cpu_count": os.cpu_count(), "native_resample_kernel": resample.native_kernel(),
        "profile": providers.read_profile("nvidia-gpu").to_dict()}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        env["gpu"] = q.stdout.strip() or q.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        env["gpu"] = f"none ({exc.__class__.__name__})"
    return env


def _tensorrt(path: Path) -> dict[str, Any]:
    """Whether a session asked for TensorRT first gets it (the wheel lists it whether or not TensorRT is there)."""
    import onnxruntime as ort

    out: dict[str, Any] = {"listed": "TensorrtExecutionProvider" in ort.get_available_providers()}
    if not out["listed"]:
        return out
    try:
        sess = ort.InferenceSession(str(path), providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])
        out["session_providers"] = sess.get_providers()
    except Exception as exc:  # ONNX Runtime's own untyped error: recorded, not fatal
        out["error"] = str(exc).splitlines()[0][:300]
    return out


def run(folder: Path, *, rounds: int, budget_s: float, only: list[str] | None = None, save: Callable[[dict], None] = lambda r: None) -> dict[str, Any]:
    import edgeinfer  # noqa: F401  (imported before timing anything)
    from edgeinfer.tasks import classification as postprocess

    manifest = json.loads((folder / "manifest.json").read_text())
    made_here = {}
    for entry in manifest["files"].values():
        dst = folder / entry["fp16"]
        if not dst.is_file():  # not carried: made here by the same conversion, and its bytes checked
            fp16_variant(folder / entry["fp32"], dst)
            made_here[dst.name] = _sha256(dst) == manifest["sha256"][dst.name]
    sha = {name: _sha256(folder / name) == digest for name, digest in manifest["sha256"].items()}
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "env": _run_env(), "rounds": rounds,
                              "files_match_manifest": sha, "fp16_made_on_this_machine": made_here, "models": []}
    env = result["env"]
    print(f"onnxruntime {env['onnxruntime']} from {env['onnxruntime_file']}; providers {env['available_providers']};"
          f" GPU {env['gpu']}", file=sys.stderr)
    result["tensorrt"] = _tensorrt(folder / manifest["files"][CLASSIFIER]["fp32"])
    print(f"TensorRT: {result['tensorrt']}", file=sys.stderr)
    crops, cls_frames = _classifier_inputs()
    for name, entry in manifest["files"].items():
        if only and name not in only:
            continue
        task = entry["task"]
        classify = task == "classify"
        if classify:
            inputs, frames_1080 = crops, cls_frames
        else:
            frames, frames_1080 = _detector_inputs(task)
            digests = {k: hashlib.sha256(v.tobytes()).hexdigest()[:16] for k, v in frames.items()}
            result.setdefault("frames_match_workstation", {})[task] = digests == manifest["frames_sha256_16"][task]
            inputs = list(frames.values())
        began = time.perf_counter()
        row: dict[str, Any] = {"model": name, "task": task, "files": {}}
        cpu, info_cpu = _load(folder / entry["fp32"], "cpu")
        gpu, info_gpu = _load(folder / entry["fp32"], "nvidia-gpu")
        g16, info_g16 = _load(folder / entry["fp16"], "nvidia-gpu")
        row["sessions"] = {"cpu_fp32": info_cpu, "gpu_fp32": info_gpu, "gpu_fp16": info_g16}
        row["files"] = {"fp32": entry["fp32"], "fp16": entry["fp16"]}
        # parity on the same prepared input (the CPU's preprocessing): only the provider differs
        if classify:
            batch = cpu.preprocessor.batch(inputs)
            raw = {k: m.run(batch) for k, m in (("cpu", cpu), ("gpu", gpu), ("g16", g16))}
            probs = {k: postprocess.to_probabilities(postprocess.class_scores(v), cpu.spec.output.kind)
                     for k, v in raw.items()}
            row["gpu_vs_cpu"] = {"max_abs_raw": float(np.abs(raw["gpu"] - raw["cpu"]).max()),
                                 **compare_scores(probs["cpu"], probs["gpu"])}
            row["fp16_gpu_vs_cpu_fp32"] = {"max_abs_raw": float(np.abs(raw["g16"] - raw["cpu"]).max()),
                                           **compare_scores(probs["cpu"], probs["g16"])}
            e2e = {k: np.stack([m.predict(f, top_k=len(cpu.labels)).scores for f in frames_1080])
                   for k, m in (("cpu", cpu), ("gpu", gpu))}
            row["gpu_vs_cpu_predict_1080p"] = compare_scores(e2e["cpu"], e2e["gpu"])
        else:
            diffs, diffs16, first = [], [], {}
            for f in inputs:
                b = cpu.prepare([f])
                t = time.perf_counter()
                o_g = gpu.infer(b)
                # the first call at a new input shape includes cuDNN's algorithm search (the profile's EXHAUSTIVE)
                first.setdefault("x".join(map(str, b.batch.shape)), round(time.perf_counter() - t, 3))
                o_c, o_16 = cpu.infer(b), g16.infer(b)
                diffs.append(max(float(np.abs(x - y).max()) for x, y in zip(o_c, o_g)))
                diffs16.append(max(float(np.abs(x - y).max()) for x, y in zip(o_c, o_16)))
            dets = {k: [m.predict(f) for f in inputs] for k, m in (("cpu", cpu), ("gpu", gpu), ("g16", g16))}
            row["gpu_vs_cpu"] = {"max_abs_raw": max(diffs), **compare_detections(dets["cpu"], dets["gpu"]),
                                 "frames": len(inputs)}
            row["gpu_fp32_first_call_s"] = first
            row["fp16_gpu_vs_cpu_fp32"] = {"max_abs_raw": max(diffs16), **compare_detections(dets["cpu"], dets["g16"]),
                                           "frames": len(inputs)}
        # latency: session.run on a prepared batch (host arrays in and out), batch 1 and a larger batch
        lat: dict[str, Any] = {}
        n_big = BATCH["classify" if classify else "detect"]
        one = cpu.prepare([frames_1080[0]])
        big_frames = (inputs * n_big)[:n_big] if classify else (frames_1080 * n_big)[:n_big]
        big = cpu.prepare(big_frames)
        for key, m in (("cpu_fp32", cpu), ("gpu_fp32", gpu), ("gpu_fp16", g16)):
            slow = key == "cpu_fp32"
            lat[key] = {
                "batch1": _timed(lambda: m.infer(one), warmup=5, rounds=rounds, budget_s=budget_s),
                f"batch{n_big}": _timed(lambda: m.infer(big), warmup=3, rounds=max(5, rounds // (4 if slow else 1)),
                                       budget_s=budget_s),
                "predict_1080p": _timed(lambda: m.predict(frames_1080[0]), warmup=5, rounds=rounds, budget_s=budget_s),
            }
        row["input_shape"] = list(one.shape)
        row["latency"] = lat
        row["phase_s"] = round(time.perf_counter() - began, 1)
        result["models"].append(row)
        save(result)  # what was measured survives a later failure
        print(f"{name}: parity {row['gpu_vs_cpu']}; fp16 {row['fp16_gpu_vs_cpu_fp32']}; providers "
              f"{info_gpu['providers']}; latency { {k: {b: v['median_ms'] for b, v in d.items()} for k, d in lat.items()} }",
              file=sys.stderr)
    return result


def table(result: dict[str, Any]) -> str:
    """The README's tables (parity, then latency) from a ``run`` result."""
    lines = ["| model | input | nvidia-gpu session | GPU vs CPU: max abs raw output | GPU vs CPU: agreement | "
             "fp16 (GPU) vs fp32 (CPU): max abs raw output | fp16 vs fp32: agreement |", "|---|---|---|---|---|---|---|"]

    def agreement(p: dict[str, Any]) -> str:
        if "top1_agreement" in p:
            return f"top-1 {p['top1_agreement']:.1%} of {p['n']}, max abs dp {p['max_abs_dp']:.2e}"
        return (f"{p['matched']}/{p['detections_ref']} matched ({p['detections']} found) on {p['frames']} frames, "
                f"min IoU {p['min_iou']}, max abs dconf {p['max_abs_dconf']}")

    for r in result["models"]:
        shape = "x".join(str(s) for s in r["input_shape"][2:])
        used = ", ".join(p.replace("ExecutionProvider", "") for p in r["sessions"]["gpu_fp32"]["providers"])
        lines.append(f"| {r['model']} | {shape} | {used} | {r['gpu_vs_cpu']['max_abs_raw']:.2e} | {agreement(r['gpu_vs_cpu'])} | "
                     f"{r['fp16_gpu_vs_cpu_fp32']['max_abs_raw']:.2e} | {agreement(r['fp16_gpu_vs_cpu_fp32'])} |")
    lines += ["", "| model | run | CPU fp32 ms | GPU fp32 ms | GPU fp16 ms |", "|---|---|---|---|---|"]
    for r in result["models"]:
        lat = r["latency"]
        for key in lat["cpu_fp32"]:
            cells = [f"{lat[p][key]['median_ms']:.2f} / {lat[p][key]['p90_ms']:.2f}" for p in ("cpu_fp32", "gpu_fp32", "gpu_fp16")]
            lines.append(f"| {r['model']} | {key.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="workstation: write the models, fp16 variants and manifest into DIR")
    p.add_argument("dir", type=Path)
    r = sub.add_parser("run", help="device: measure the models in DIR")
    r.add_argument("dir", type=Path)
    r.add_argument("--json", type=Path, default=Path(__file__).with_name("gpu_providers.json"))
    r.add_argument("--rounds", type=int, default=50)
    r.add_argument("--only", nargs="+", help="measure only these models (manifest names)")
    r.add_argument("--budget-s", type=float, default=4.0, help="stop a timing loop after this many seconds")
    t = sub.add_parser("table", help="print the README tables of a result JSON")
    t.add_argument("json", type=Path)
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(args.dir)
    elif args.cmd == "run":
        def save(result: dict[str, Any]) -> None:
            args.json.write_text(json.dumps(result, indent=2) + "\n")

        result = run(args.dir, rounds=args.rounds, budget_s=args.budget_s, only=args.only, save=save)
        save(result)
        print(table(result))
    else:
        print(table(json.loads(args.json.read_text())))


if __name__ == "__main__":
    main()
