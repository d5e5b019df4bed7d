"""The engines on arm64 (issue 26, item 5): every engine installed in the arm64 root runs real models through
edgeinfer under emulation, compared with the same engine on x86 and with ONNX Runtime on x86 by the task's own
gate (the one ``edgeinfer convert`` applies: probabilities <= 1e-3 with the same top-1, boxes <= 0.5 px with
equal counts).

Three sides, one file (the arm64 side imports numpy and edgeinfer only; torch, Ultralytics and the converters
are imported inside the x86 functions):

- x86 (:func:`build`): a photo classifier trained here (MobileNetV3-Small, exported with its ImageNet spec) and
  the shapes detector trained here (Ultralytics' ONNX export at 320); each engine's files made as a user makes
  them on the workstation (``convert --engine ncnn|openvino``: pnnx and OpenVINO's converter are x86 tools);
  the BGR frames as ``.npy`` (decoding is checked apart, by the main suite); the gate's fields per engine on x86.
- arm64 (:func:`device`, ``python engine_parity.py device``): each engine in the bundle that is installed in the
  root (what ``arm.sh`` installed, recorded in ``/opt/venv/edgeinfer-engines``) loads each model with
  ``edgeinfer.load(..., engine=...)`` and gives the gate's fields on the same frames; ``engine="auto"`` on the
  raspberry-pi-5 profile; engines without an edgeinfer adapter are imported only.
- x86 again (:func:`compare`): the gates, written by ``suite.py`` under the record's ``engines`` key.

Correctness only: no timing from emulation is recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
THREADS = 1  # the same on both sides; emulated threads would only share the host's two cores
CPU = "cortex-a76"  # the Raspberry Pi 5's core: the device the engines are chosen for (devices/raspberry-pi-5.toml)
RECORDS = Path("/opt/venv/edgeinfer-engines")  # what arm.sh's install_engine wrote, one file per package
# the module each package arm.sh installs is imported as; one whose module no row of edgeinfer's engine table
# names (ai_edge_litert before the LiteRT adapter) is imported, not run
PACKAGES = {"openvino": "openvino", "ncnn": "ncnn", "ai-edge-litert": "ai_edge_litert"}


def fingerprint() -> str:
    """Changes when what decides the x86 side changes: the functions here that make it, the engine adapters, the
    converters' engine code and the versions of the libraries that make the models and artifacts (the arm64 side
    and the comparison may change without rebuilding the bundle)."""
    import inspect

    repo = HERE.parent.parent
    h = hashlib.sha1()
    for fn in (samples, save_samples, _classifier, _detector, build):
        h.update(inspect.getsource(fn).encode())
    for f in [*sorted((repo / "edgeinfer" / "engines").glob("*.py")), repo / "converters" / "engines.py"]:
        h.update(f.name.encode() + f.read_bytes())
    for dist in ("torch", "ultralytics", "onnxruntime", "openvino", "ncnn", "pnnx", "opencv-python", "numpy"):
        h.update(f"{dist}={_version(dist)}".encode())
    return h.hexdigest()[:16]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def samples(model: Any, frames: list[np.ndarray], inputs: list[np.ndarray] | None = None) -> list[dict[str, Any]]:
    """The task's gate fields for each frame, one image per call: the steps of converters.engines.samples, which
    the arm64 side cannot import (the converters stay on the workstation). With ``inputs`` (the graph input x86
    made of each frame) the engine runs that tensor instead of this machine's preprocessing of the frame, so only
    the engine differs from x86."""
    from edgeinfer.pipeline.preprocess import Prepared

    out = []
    for i, frame in enumerate(frames):
        prepared = model.prepare([frame])
        if inputs is not None:
            prepared = Prepared(inputs[i], prepared.sizes)
        outputs = model.infer(prepared)
        out.append(model.task.sample(model.spec, outputs, model.finish(prepared, outputs)[0]))
    return out


# Two ways each engine runs on arm64: "tensor", the graph input x86 made (the engine alone against x86), and
# "frame", the frame preprocessed here (end to end: OpenCV's cv2.resize is not bit-exact across architectures,
# tests/arm64/README.md, so a letterbox or OpenCV-resize spec feeds the engine a slightly different tensor).
MODES = ("tensor", "frame")


def save_samples(path: Path, per: dict[str, list[dict[str, Any]]]) -> None:
    """``{key: [sample per frame]}`` as one .npz: ``key/frame/field`` (``key/frame/field/k`` for a list of arrays);
    a key is ``model/engine/mode``."""
    arrays = {}
    for key, rows in per.items():
        for i, row in enumerate(rows):
            for field, value in row.items():
                if isinstance(value, (list, tuple)):
                    for k, v in enumerate(value):
                        arrays[f"{key}/{i}/{field}/{k}"] = np.asarray(v)
                else:
                    arrays[f"{key}/{i}/{field}"] = np.asarray(value)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_samples(path: Path) -> dict[str, list[dict[str, Any]]]:
    per: dict[str, dict[int, dict[str, Any]]] = {}
    with np.load(path) as z:
        for name in z.files:
            parts = name.split("/")
            key, i, field = "/".join(parts[:3]), int(parts[3]), parts[4]
            row = per.setdefault(key, {}).setdefault(i, {})
            if len(parts) == 6:
                row.setdefault(field, {})[int(parts[5])] = z[name]
            else:
                row[field] = z[name]
    return {key: [{f: [v[k] for k in sorted(v)] if isinstance(v, dict) else v for f, v in rows[i].items()}
                  for i in sorted(rows)] for key, rows in per.items()}


# ---------------------------------------------------------------------------------------------- x86 side


def _classifier(folder: Path) -> tuple[Path, list[np.ndarray], str]:
    import cv2
    from skimage import data

    import converters
    from converters.zoo import imagenet_eval_transform
    from tests.arm64.references import SKIMAGE_RGB, photo_files
    from tests.material.photos import train_photo_classifier

    photos = [getattr(data, n)() for n in SKIMAGE_RGB]
    model = train_photo_classifier("mobilenet_v3_small", photos)
    path = folder / "classifier.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converters.export(model, path, transform=imagenet_eval_transform(), labels=list(SKIMAGE_RGB), images=photos)
    files = {f.name: f for f in photo_files()}
    frames = [cv2.imread(str(files[n]), cv2.IMREAD_COLOR) for n in ("astronaut.png", "coffee.png", "china.jpg")]
    return path, frames, "MobileNetV3-Small 'which photo is this?' classifier trained here, 224x224, ImageNet spec"


def _detector(folder: Path) -> tuple[Path, list[np.ndarray], str]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("EDGEINFER_CACHE", str(HERE.parent / "data" / "detectors"))
    from tests.material import shapes

    path = shapes.export(shapes.train("detect"), folder / "det", imgsz=320, variants=["raw"])["raw"]
    target = folder / "detector.onnx"
    path.replace(target)
    path.parent.rmdir()
    frames = [f.image for name, f in shapes.test_frames("detect").items() if name in ("landscape", "portrait")]
    return target, frames, "the shapes YOLO11n detector trained here, Ultralytics' ONNX export at 320x320"


MODELS = {"classifier": _classifier, "detector": _detector}


def build(bundle: Path, *, models: tuple[str, ...] = tuple(MODELS), log=print) -> dict:
    """Write the bundle (replacing an older one): models, engine files, frames and the x86 gate fields."""
    import shutil

    import onnxruntime as ort

    import edgeinfer
    from converters.engines import WRITERS, convert
    from edgeinfer import engines
    from edgeinfer.errors import EdgeInferError

    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    t0 = time.perf_counter()
    entries, per = [], {}
    for name in models:
        path, frames, what = MODELS[name](bundle)
        frame_files, input_files = [], []
        reference = edgeinfer.load(path, threads=THREADS)
        for i, frame in enumerate(frames):
            frame_files.append(f"{name}-frame{i}.npy")
            np.save(bundle / frame_files[-1], np.ascontiguousarray(frame))
            input_files.append(f"{name}-input{i}.npy")  # the graph input, made by edgeinfer on x86
            np.save(bundle / input_files[-1], reference.prepare([frame]).batch)
        entry = {"name": name, "what": what, "path": path.name, "frames": frame_files, "inputs": input_files,
                 "frame_shapes": [list(f.shape) for f in frames], "engines": {}}
        for engine in engines.names():
            row: dict[str, Any] = {"installed_x86": engines.installed(engine)}
            if not row["installed_x86"]:
                entry["engines"][engine] = row
                continue
            if engine in WRITERS:  # the files a user deploys, made where the converters run
                try:
                    report = convert(path, engine=engine, images=frames, threads=THREADS)
                except EdgeInferError as exc:  # a converter missing here, or a graph it cannot take: said, not run
                    row["not_converted"] = f"{type(exc).__name__}: {exc}"
                    entry["engines"][engine] = row
                    continue
                row["artifact"] = {"folder": Path(report.folder).name, "files": list(report.files),
                                   "parity_vs_onnxruntime": dict(report.parity)}
            model = edgeinfer.load(path, engine=engine, threads=THREADS)
            row["task"] = model.spec.task
            row["version_x86"] = model.engine_version
            per[f"{name}/{engine}/frame"] = samples(model, frames)
            entry["engines"][engine] = row
        log(f"engine references: {name} ({time.perf_counter() - t0:.0f} s)")
        entries.append(entry)
    save_samples(bundle / "x86-samples.npz", per)
    manifest = {"fingerprint": fingerprint(), "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "x86": {"machine": platform.machine(), "python": platform.python_version(),
                        "onnxruntime": ort.__version__,
                        **{d: _version(d) for d in ("openvino", "ncnn", "pnnx", "ai-edge-litert", "torch")}},
                "threads": THREADS, "models": entries}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    return manifest


def compare(bundle: Path, manifest: dict, result: dict) -> dict:
    """Each arm64 engine's fields against the same engine on x86 and against ONNX Runtime on x86, by the task's
    gate; the figures and verdicts for the record."""
    import edgeinfer

    x86 = load_samples(bundle / "x86-samples.npz")
    arm = load_samples(bundle / result["samples"]) if result.get("samples") else {}
    models = {}
    for entry in manifest["models"]:
        name = entry["name"]
        gate = edgeinfer.load(bundle / entry["path"]).task.gate
        rows = {}
        for engine in entry["engines"]:
            ran = result["runs"].get(f"{name}/{engine}", {})
            row = {"ran": all(f"{name}/{engine}/{mode}" in arm for mode in MODES),
                   **{k: ran[k] for k in ("version", "providers", "artifact", "error") if k in ran}}
            for mode in MODES:
                key = f"{name}/{engine}/{mode}"
                for against, ref in (("same_engine", f"{name}/{engine}/frame"), ("onnxruntime", f"{name}/onnxruntime/frame")):
                    if key in arm and ref in x86:
                        v = gate(x86[ref], arm[key])
                        row.setdefault(mode, {})[f"vs_{against}_x86"] = {"passed": bool(v.passed), **v.figures}
            rows[engine] = row
        models[name] = {"what": entry["what"], "frames": entry["frame_shapes"],
                        "input_vs_x86": result.get("inputs", {}).get(name), "engines": rows}
    return {"cpu": result["qemu_cpu"], "threads": manifest["threads"], "x86": manifest["x86"],
            "arm64": result["arm64"], "wheels": result["wheels"], "imports": result["imports"], "models": models,
            "raspberry_pi_5_auto": result.get("raspberry_pi_5_auto"), "fingerprint": manifest["fingerprint"],
            "machine": result["machine"], "emulated": result["emulated"]}


def failures(summary: dict) -> list[str]:
    """What item 5 promises, checked on the figures: every engine that installed ran every model, on x86's graph
    input within the task's whole gate against its x86 self and ONNX Runtime on x86; end to end (this machine's
    preprocessing) the same, except that where the input itself differs from x86's (OpenCV's resize) the raw
    outputs may move beyond the gate's 1e-3 while what a user gets (top-1 and probabilities, boxes and counts)
    stays within it."""
    out = []
    for pkg, w in summary["wheels"].items():
        if w["status"] == "installed" and not summary["imports"].get(pkg, {}).get("imported"):
            out.append(f"{pkg}: installed in the root but not importable ({summary['imports'].get(pkg)})")
    for name, m in summary["models"].items():
        for engine, row in m["engines"].items():
            if not row["ran"]:
                if engine in summary["arm64"]["engines_installed"]:
                    out.append(f"{name} on {engine}: installed in the root but did not run ({row.get('error')})")
                continue
            for mode in MODES:
                for against in ("vs_same_engine_x86", "vs_onnxruntime_x86"):
                    v = row.get(mode, {}).get(against)
                    if v is None:
                        out.append(f"{name} on {engine} ({mode}) {against}: not compared")
                    elif not v["passed"] and not (mode == "frame" and m["input_vs_x86"]["max_abs_diff"] > 0
                                                  and _users_share_passes(v)):
                        out.append(f"{name} on {engine} ({mode}) {against}: {v}")
    return out


def _users_share_passes(v: dict) -> bool:
    """The part of a gate's verdict a user sees: probabilities and top-1, or the same counts and boxes."""
    if "top1_agreement" in v:
        return v["max_abs_diff"] <= v["atol"] and v["top1_disagreements"] == 0
    return v["detections"] == v["candidate_detections"] and v["box_max_abs_diff"] <= v["box_atol"]


# -------------------------------------------------------------------------------------------- arm64 side


def _installed_mb(dists: list[str]) -> float:
    """The bytes pip recorded for these distributions (their RECORD), in MB."""
    total = 0
    for d in dists:
        try:
            dist = importlib.metadata.distribution(d)
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in dist.files or []:
            p = Path(dist.locate_file(f))
            if p.is_file():
                total += p.stat().st_size
    return round(total / 1e6, 1)


def wheels() -> dict[str, dict]:
    """What arm.sh's install of each engine package gave (its record file), with the installed size."""
    out = {}
    for f in sorted(RECORDS.glob("*.txt")) if RECORDS.is_dir() else []:
        row: dict[str, Any] = {}
        for line in f.read_text().splitlines():
            key, _, value = line.partition(": ")
            if key == "wheel":
                file, size = value.rsplit(" ", 1)
                row.setdefault("wheels", []).append({"file": file, "mb": round(int(size) / 1e6, 1)})
            elif key == "new":  # name==version, or (pip freeze) "name @ file:///...whl" for the wheel itself
                tokens = value.split()
                row["brought"] = [t for i, t in enumerate(tokens) if t != "@" and (i == 0 or tokens[i - 1] != "@")]
            elif key == "error":
                row.setdefault("errors", []).append(value)
            else:
                row[key] = int(value) if key == "seconds" else value
        if row.get("status") == "installed":  # the package itself, and what its install added to the venv
            name = row["requirement"].split("==")[0]
            row["installed_mb"] = _installed_mb(list(dict.fromkeys([name] + [n.split("==")[0]
                                                                            for n in row.get("brought", [])])))
        out[f.stem] = row
    return out


def device(bundle: Path, out: Path, *, resume: bool) -> dict:
    """Run every engine of the bundle that is installed here on every model; write ``out`` (JSON) and its samples."""
    import edgeinfer
    from edgeinfer import engines
    from edgeinfer.requirements import versions
    from edgeinfer.tools.bench import emulation

    manifest = json.loads((bundle / "manifest.json").read_text())
    samples_file = out.with_suffix(".npz")
    previous = json.loads(out.read_text()) if resume and out.exists() else {}
    if previous.get("fingerprint") != manifest["fingerprint"] or not previous.get("partial"):
        previous = {}
    done = load_samples(samples_file) if previous and samples_file.exists() else {}
    imports = {}
    for pkg, module in PACKAGES.items():
        try:
            mod = importlib.import_module(module)
            imports[pkg] = {"imported": True, "version": _version(pkg), "module": module,
                            "runs_through_edgeinfer": any(r.package == module for r in engines.ENGINES.values())}
            if module == "ai_edge_litert":  # its interpreter is the part a LiteRT adapter would use
                from ai_edge_litert import interpreter

                imports[pkg]["interpreter"] = interpreter.Interpreter.__name__
            del mod
        except Exception as exc:  # noqa: BLE001 -- a broken install is a finding to record, whatever it raises
            imports[pkg] = {"imported": False, "error": f"{type(exc).__name__}: {exc}"}
    v = versions()
    result = {"fingerprint": manifest["fingerprint"], "qemu_cpu": os.environ.get("QEMU_CPU"),
              "machine": platform.machine(), "emulated": emulation(),
              "arm64": {"python": v["python"], "onnxruntime": v["onnxruntime"], "numpy": v["numpy"],
                        "engines_installed": [e for e in engines.names() if engines.installed(e)]},
              "wheels": wheels(), "imports": imports, "runs": previous.get("runs", {}),
              "samples": samples_file.name}
    per = dict(done)
    result["inputs"] = {}
    for entry in manifest["models"]:
        frames = [np.load(bundle / f) for f in entry["frames"]]
        inputs = [np.load(bundle / f) for f in entry["inputs"]]
        # this machine's preprocessing against x86's, in the graph input's own units
        here = [edgeinfer.load(bundle / entry["path"]).prepare([f]).batch for f in frames]
        result["inputs"][entry["name"]] = {
            "max_abs_diff": float(max(np.abs(a - b).max() for a, b in zip(here, inputs))),
            "values_differing": int(sum(np.count_nonzero(a != b) for a, b in zip(here, inputs))),
            "values": int(sum(a.size for a in inputs))}
        for engine, made in entry["engines"].items():
            key = f"{entry['name']}/{engine}"
            if key in result["runs"] and all(f"{key}/{mode}" in per for mode in MODES):
                continue
            if not engines.installed(engine):
                result["runs"][key] = {"error": f"{engine} is not installed in the root"}
                continue
            if "task" not in made:  # nothing to compare with: x86 did not run it (the reason is in the manifest)
                result["runs"][key] = {"error": f"no x86 reference: {made.get('not_converted', 'not installed on x86')}"}
                continue
            t0 = time.perf_counter()
            try:
                model = edgeinfer.load(bundle / entry["path"], engine=engine, threads=THREADS)
                per[f"{key}/tensor"] = samples(model, frames, inputs)
                per[f"{key}/frame"] = samples(model, frames)
                result["runs"][key] = {"version": model.engine_version, "providers": list(model.providers),
                                       "artifact": model.session.artifact is not None}
            except Exception as exc:  # noqa: BLE001 -- an engine that fails here is the finding
                result["runs"][key] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"engines: {key}: {'ran' if 'error' not in result['runs'][key] else result['runs'][key]['error']} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            save_samples(samples_file, per)
            out.write_text(json.dumps({**result, "partial": True}, indent=1) + "\n")
    result["raspberry_pi_5_auto"] = _auto(bundle, manifest)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _auto(bundle: Path, manifest: dict) -> dict:
    """``engine="auto"`` with the raspberry-pi-5 profile on the classifier: the engine the profile prefers that is
    installed here and has its files beside the model, and what it said about the ones it skipped."""
    import edgeinfer

    path = bundle / manifest["models"][0]["path"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = edgeinfer.load(path, device="raspberry-pi-5", engine="auto")
            chosen, error = model.engine, None
        except Exception as exc:  # noqa: BLE001
            chosen, error = None, f"{type(exc).__name__}: {exc}"
    return {"model": manifest["models"][0]["name"], "engine": chosen, "error": error,
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught
                         if "Engine" in w.category.__name__ or "Provider" in w.category.__name__]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="side", required=True)
    b = sub.add_parser("build", help="x86: the bundle")
    b.add_argument("bundle", type=Path)
    d = sub.add_parser("device", help="arm64: run the engines installed here")
    d.add_argument("--bundle", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    if args.side == "build":
        sys.path.insert(0, str(HERE.parent.parent))
        build(args.bundle)
    else:
        device(args.bundle, args.out, resume=args.resume)


if __name__ == "__main__":
    main()
