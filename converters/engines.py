"""Engine artifacts made on the workstation: ``edgeinfer convert MODEL.onnx --engine NAME``.

Each engine's files go into ``MODEL.NAME/`` beside the model (:func:`edgeinfer.engines.base.artifact_dir`) with
``edgeinfer.json``: the spec's hash, the ONNX graph's ports, the engine's version and the parity measured against
ONNX Runtime through the edgeinfer runtime (the spec's self-test image and ``images``), judged by the task's own
gate (:mod:`edgeinfer.tasks.gates`, the one export and the precision variants use). A candidate that fails the
gate is not written: the files are made in a staging folder and moved into place only when it passes.

How each engine's files are made, and what that costs on the workstation:

- ``ncnn``: pnnx (``pip install pnnx``: its own converter binary, 85 MB installed, no torch needed for an ONNX
  input) turns the ONNX file into ncnn's ``param``/``bin`` pair, traced at the first image's input size (and a
  second size, so a dynamic-size graph stays dynamic). The device needs only ``pip install ncnn`` (28 MB).
- ``openvino``: OpenVINO's own converter (``openvino.convert_model``) reads the ONNX file; weights stay float32
  (``compress_to_fp16=False``; ``weights="f16"`` asks for OpenVINO's own default, half the file, and is kept only
  when it passes the gate). ``pip install openvino``, a wheel
  with numpy and openvino-telemetry as its only dependencies (180 MB installed).
- ``litert``: onnx2tf 2.6.9 (its default ``flatbuffer_direct`` path writes the LiteRT flatbuffer straight from the
  ONNX graph: no TensorFlow, and the ONNX tensor names kept) makes ``model.tflite``. onnx2tf needs Python >= 3.12
  and pins its own numpy, onnx and onnxruntime, so it runs as a subprocess of the Python ``$EDGEINFER_LITERT_PYTHON``
  names (a venv of its own: 659 MB, ``./edge test`` makes ``.venv-litert``). The .tflite is channels-last; each
  port's axis order is found here (by shape, and by ONNX Runtime's values where the shape leaves it open) and kept
  in the record for the adapter. Weights stay float32: onnx2tf's float16 .tflite computes in float16, which
  LiteRT's CPU kernels refuse. The device needs only ``pip install ai-edge-litert`` (59 MB installed, no
  TensorFlow).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgeinfer import engines
from edgeinfer.engines import base
from edgeinfer.errors import DependencyError, EdgeInferError, ImageError
from edgeinfer.pipeline import contract
from edgeinfer.pipeline.images import decode, image_files


class EngineRefused(EdgeInferError):
    """An engine's artifact disagreed with ONNX Runtime beyond the task's gate and was not written."""

    def __init__(self, message: str, report: "ConvertReport") -> None:
        super().__init__(message)
        self.report = report  # the figures it was refused on


class EngineUnsupported(EdgeInferError):
    """The engine's converter cannot express this graph in a form the engine runs; nothing was written."""


@dataclass(frozen=True)
class ConvertReport:
    """What ``convert`` made and how it compares with ONNX Runtime (the gate's own figures)."""

    engine: str
    engine_version: str
    source: str
    folder: str
    files: tuple[str, ...]
    spec_sha256: str
    images: int
    passed: bool
    written: bool
    parity: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "files": list(self.files), "parity": dict(self.parity)}


# what a writer gives back: the artifact's file names, and fields for its record (the adapter reads them there)
Written = tuple[list[str], dict[str, Any]]
LITERT_PYTHON = "EDGEINFER_LITERT_PYTHON"  # the Python that has onnx2tf (a venv of its own: it needs >= 3.12)
LITERT_VENV = ("python3.12 -m venv .venv-litert && .venv-litert/bin/pip install onnx2tf==2.6.9, then "
               f"export {LITERT_PYTHON}=$PWD/.venv-litert/bin/python")


def _openvino(src: Path, folder: Path, weights: str, example: Mapping[str, np.ndarray], dynamic: bool) -> Written:
    import openvino as ov

    ov.save_model(ov.convert_model(str(src)), str(folder / "model.xml"), compress_to_fp16=weights == "f16")
    return ["model.xml", "model.bin"], {}


def _ncnn(src: Path, folder: Path, weights: str, example: Mapping[str, np.ndarray], dynamic: bool) -> Written:
    import subprocess

    try:
        import pnnx
    except ImportError as exc:
        raise DependencyError(f"convert --engine ncnn needs pnnx on the workstation: pip install pnnx ({exc}).") from exc
    if len(example) != 1 or next(iter(example.values())).dtype != np.float32:
        raise EdgeInferError(f"{src.name}: the ncnn adapter runs graphs with one float32 image input; this one takes "
                             f"{[(k, str(v.dtype)) for k, v in example.items()]}. Run it on onnxruntime or openvino.")
    shape = list(next(iter(example.values())).shape)
    second = shape[:2] + [d + 32 for d in shape[2:]]  # a second size keeps a dynamic-size graph's shapes symbolic
    from edgeinfer.engines.ncnn import BIN, PARAM

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / src.name).symlink_to(src.resolve())  # pnnx writes its intermediate files beside its input
        args = [pnnx.EXEC_PATH, str(t / src.name), f"inputshape={shape}f32".replace(" ", ""), f"fp16={int(weights == 'f16')}",
                f"ncnnparam={folder / PARAM}", f"ncnnbin={folder / BIN}", f"ncnnpy={t / 'ncnn.py'}",
                f"pnnxparam={t / 'p.param'}", f"pnnxbin={t / 'p.bin'}", f"pnnxpy={t / 'p.py'}",
                f"pnnxonnx={t / 'p.onnx'}"]
        if dynamic:
            args.insert(3, f"inputshape2={second}f32".replace(" ", ""))
        done = subprocess.run(args, capture_output=True, text=True, cwd=t)
    if done.returncode != 0 or not (folder / PARAM).is_file():
        raise EngineUnsupported(f"{src.name}: pnnx failed to make ncnn files (exit {done.returncode}): "
                                f"{(done.stderr or done.stdout)[-800:]}; nothing written.")
    # pnnx leaves the operators it could not lower as pnnx.* layers, which ncnn cannot load (pnnx.Expression:
    # a shape computed at run time, e.g. a resize to the input's own size)
    left = sorted({line.split()[0] for line in (folder / PARAM).read_text().splitlines()[2:]
                   if line.split() and line.split()[0].startswith("pnnx.")})
    if left:
        raise EngineUnsupported(f"{src.name}: pnnx left operators ncnn does not run ({', '.join(left)}); nothing "
                                "written. This graph runs on onnxruntime or openvino.")
    return [PARAM, BIN], {}


def _onnx2tf() -> tuple[str, str]:
    """(the Python that runs onnx2tf, onnx2tf's version): $EDGEINFER_LITERT_PYTHON, else this Python when it has
    onnx2tf."""
    import subprocess
    import sys

    # absolute (not resolved: a venv's python is a link whose target is outside the venv), as onnx2tf runs in a
    # folder of its own
    python = os.path.abspath(os.environ.get(LITERT_PYTHON) or sys.executable)
    try:
        done = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('onnx2tf'))"],
                              capture_output=True, text=True, timeout=120)
    except OSError as exc:
        done = None
        why = f"{LITERT_PYTHON}={python} cannot be run ({exc})"
    if done is not None and done.returncode == 0:
        return python, done.stdout.strip()
    if done is not None:
        why = f"{python} has no onnx2tf" + ("" if os.environ.get(LITERT_PYTHON) else f" and {LITERT_PYTHON} is unset")
    raise DependencyError(f"convert --engine litert runs onnx2tf (ONNX -> .tflite, no TensorFlow needed) in a Python "
                          f">= 3.12 of its own; {why}. Make it: {LITERT_VENV}.")


def _axes(onnx_shape: Sequence[int], tflite_signature: Sequence[int]) -> list[tuple[int, ...]]:
    """The axis orders (as is, or channels-last) that take an ONNX tensor of ``onnx_shape`` to the .tflite's
    signature (-1: dynamic there)."""
    rank = len(onnx_shape)
    orders = [tuple(range(rank))] + ([(0, *range(2, rank), 1)] if rank >= 3 else [])
    return [o for o in orders if len(tflite_signature) == rank
            and all(t < 0 or onnx_shape[a] == t for a, t in zip(o, tflite_signature))]


def _litert(src: Path, folder: Path, weights: str, example: Mapping[str, np.ndarray], dynamic: bool) -> Written:
    import re
    import subprocess

    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from edgeinfer.engines.litert import TFLITE, onnx_type

    if weights == "f16":
        # onnx2tf's float16 .tflite computes in float16, inputs and outputs included; LiteRT's CPU kernels refuse it
        # (measured with ai-edge-litert 2.3.0: MAX_POOL_2D in ResNet-18, RELU_0_TO_1 in MobileNetV3-Small)
        raise EngineUnsupported(f"{src.name}: weights 'f16' for litert is onnx2tf's float16 graph, which LiteRT's CPU "
                                "kernels do not run; nothing written. Convert with weights 'f32'.")
    python, o2t = _onnx2tf()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / src.name).symlink_to(src.resolve())  # onnx2tf writes its intermediate files beside its input
        # flatbuffer_direct (onnx2tf's default): ONNX -> LiteRT flatbuffer directly, keeping the ONNX tensor names
        done = subprocess.run([python, "-m", "onnx2tf", "-i", str(t / src.name), "-o", str(t / "out"),
                               "-tb", "flatbuffer_direct"], capture_output=True, text=True, cwd=t, timeout=3600)
        made = t / "out" / f"{src.stem}_{'float16' if weights == 'f16' else 'float32'}.tflite"
        if done.returncode != 0 or not made.is_file():
            said = re.sub(r"\x1b\[[0-9;]*m", "", done.stderr + done.stdout)
            error = [line for line in said.splitlines() if "Error" in line or "error" in line] or said.splitlines()
            raise EngineUnsupported(f"{src.name}: onnx2tf {o2t} could not make a .tflite (exit {done.returncode}): "
                                    f"{' | '.join(error[-3:])[-800:]}; nothing written. This graph runs on onnxruntime "
                                    "or openvino.")
        shutil.copyfile(made, folder / TFLITE)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, dict(example))))
    it = Interpreter(model_path=str(folder / TFLITE))
    tensors = {d["name"]: d for d in it.get_input_details() + it.get_output_details()}
    layout: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}
    for side, nodes, values in (("inputs", ref.get_inputs(), example), ("outputs", ref.get_outputs(), want)):
        for node in nodes:
            d = tensors.get(node.name)
            if d is None:
                raise EngineUnsupported(f"{src.name}: the .tflite onnx2tf made has no tensor {node.name!r} (its "
                                        f"ports: {sorted(tensors)}); nothing written.")
            if onnx_type(d["dtype"]) != node.type:
                raise EngineUnsupported(f"{src.name}: the ONNX {side[:-1]} {node.name!r} is {node.type}; in the "
                                        f".tflite it is {onnx_type(d['dtype'])}; nothing written.")
            orders = _axes(values[node.name].shape, d["shape_signature"].tolist())
            if side == "inputs" and len(orders) != 1:
                raise EngineUnsupported(f"{src.name}: cannot tell the .tflite input {node.name!r}'s axis order "
                                        f"({d['shape_signature'].tolist()} for ONNX {list(values[node.name].shape)}): "
                                        f"{'none fits' if not orders else 'both as-is and channels-last fit'}; "
                                        "nothing written.")
            layout[side].append({"name": node.name, "tensor": node.name, "perm": list(orders[0]) if orders else None,
                                 "candidates": orders})
    # outputs whose layout the shapes leave open (e.g. a dynamic-size [N, C, H, W] map) are settled by the values:
    # the .tflite run on the example against ONNX Runtime's outputs
    for entry in layout["inputs"]:
        d = tensors[entry["name"]]
        it.resize_tensor_input(d["index"], list(np.transpose(example[entry["name"]], entry["perm"]).shape))
    it.allocate_tensors()
    for entry in layout["inputs"]:
        it.set_tensor(tensors[entry["name"]]["index"],
                      np.ascontiguousarray(np.transpose(example[entry["name"]], entry.pop("candidates")[0])))
    try:
        it.invoke()
    except RuntimeError as exc:  # LiteRT's CPU kernels refuse an operator of the graph as onnx2tf wrote it
        raise EngineUnsupported(f"{src.name}: LiteRT {engines.adapter('litert').version()} cannot run the .tflite "
                                f"onnx2tf {o2t} made: {exc}; nothing written.") from exc
    for entry in layout["outputs"]:
        got = it.get_tensor(tensors[entry["name"]]["index"])
        fits = [o for o in entry.pop("candidates") if got.shape == tuple(np.transpose(want[entry["name"]], o).shape)]
        if not fits:
            raise EngineUnsupported(f"{src.name}: the .tflite output {entry['name']!r} has shape {list(got.shape)}, "
                                    f"ONNX Runtime's {list(want[entry['name']].shape)}; nothing written.")
        entry["perm"] = list(min(fits, key=lambda o: float(np.abs(
            np.transpose(got, np.argsort(o)).astype(np.float64) - want[entry["name"]]).max())))
    return [TFLITE], {"litert": {**layout, "converter": f"onnx2tf {o2t} (flatbuffer_direct)"}}


# engine -> writes its files for the .onnx into a folder (weights "f32", or "f16" where the engine stores them
# so; ``example``: one image's feed as the graph takes it; ``dynamic``: the graph's input size follows the image),
# returns their names (the adapter's loader reads them) and what the record keeps beside them for the adapter
WRITERS: dict[str, Callable[[Path, Path, str, Mapping[str, np.ndarray], bool], Written]] = {
    "openvino": _openvino, "ncnn": _ncnn, "litert": _litert}
WEIGHTS = ("f32", "f16")


def _frames(model: Any, images: Any) -> list[np.ndarray]:
    """The self-test image (when the spec has one) and the given images (a folder, files or BGR arrays)."""
    out = []
    st = model.spec.self_test
    if st is not None:
        out.append(decode(base64.b64decode(st.image_png), exif_orientation=False, source="self-test image"))
    items = image_files(images) if isinstance(images, (str, os.PathLike)) and Path(images).is_dir() else list(images or [])
    for item in items:
        if isinstance(item, np.ndarray):
            out.append(item)
            continue
        try:
            out.append(decode(Path(item).read_bytes(), exif_orientation=model.spec.decode.exif_orientation,
                              source=str(item)))
        except (ImageError, OSError):
            continue  # an unreadable file is not evidence either way
    if not out:
        raise ImageError(f"{model.path}: the spec has no self-test image and no readable image was given; pass "
                         "images (--images DIR) to measure the engine against ONNX Runtime on.")
    return out


def samples(model: Any, frames: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """The task's gate fields for each frame (BGR) as ``model`` deploys it, one image per call."""
    out = []
    for frame in frames:
        prepared = model.prepare([frame])
        outputs = model.infer(prepared)
        out.append(model.task.sample(model.spec, outputs, model.finish(prepared, outputs)[0]))
    return out


def convert(model_path: str | os.PathLike, *, engine: str, images: Any = None,
            tolerances: Mapping[str, float] | None = None, threads: int | None = None,
            weights: str = "f32") -> ConvertReport:
    """Write engine ``engine``'s artifact of ``model_path`` beside it and return the report.

    The candidate runs through the edgeinfer runtime (its preprocessing and decoders) on the spec's self-test
    image and ``images``; the task's gate compares it with ONNX Runtime (``tolerances`` go to the gate). Below
    the gate nothing is written and :class:`EngineRefused` is raised.
    """
    import edgeinfer

    src = Path(model_path)
    if engine not in WRITERS:
        raise EdgeInferError(f"convert --engine: expected one of {sorted(WRITERS)}, found {engine!r}.")
    if weights not in WEIGHTS:
        raise EdgeInferError(f"convert weights: expected one of {WEIGHTS}, found {weights!r}.")
    engines.adapter(engine)  # a missing engine package says how to install it before any work is done
    reference = edgeinfer.load(src, threads=threads)
    frames = _frames(reference, images)
    final = base.artifact_dir(src, engine)
    stage = Path(tempfile.mkdtemp(prefix=f".{src.stem}.{engine}.", dir=src.parent))
    try:
        # the staged artifact sits beside a link to the model, where the engine's loader will look for it
        (stage / src.name).symlink_to(src.resolve())
        folder = base.artifact_dir(stage / src.name, engine)
        folder.mkdir()
        prepared = reference.prepare([frames[0]])
        example = contract.feeds(reference.spec.input, prepared.batch, prepared.sizes, str(src))
        files, extra = WRITERS[engine](src, folder, weights, example, reference.spec.input.dynamic_size)
        spec_sha = base.spec_hash(reference.spec)
        record = {"schema": "edgeinfer.engine/1", "engine": engine, "engine_version": "", "source": src.name,
                  "spec_sha256": spec_sha, "weights": weights, "files": files, "inputs": base.ports(reference.session.get_inputs()),
                  "outputs": base.ports(reference.session.get_outputs()), **extra}
        (folder / base.RECORD).write_text(json.dumps(record, indent=1))
        candidate = edgeinfer.load(stage / src.name, engine=engine, threads=threads)
        verdict = reference.task.gate(samples(reference, frames), samples(candidate, frames), **dict(tolerances or {}))
        parity = {"reference": f"onnxruntime {reference.engine_version}", "passed": bool(verdict.passed),
                  **verdict.figures}
        report = ConvertReport(engine, candidate.engine_version, str(src), str(final), tuple(files), spec_sha,
                               len(frames), bool(verdict.passed), False, parity)
        if not verdict.passed:
            raise EngineRefused(f"{src.name} on {engine} {candidate.engine_version}: outside the {reference.spec.task} "
                                f"gate against ONNX Runtime on {len(frames)} image(s) ({_figures(verdict.figures)}); "
                                f"nothing written. Report it with the figures, or keep running the .onnx on ONNX "
                                f"Runtime.", report)
        record.update(engine_version=candidate.engine_version, parity=parity)
        (folder / base.RECORD).write_text(json.dumps(record, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(folder, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return ConvertReport(**{**report.__dict__, "written": True})


def _figures(figures: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in figures.items() if isinstance(v, float))
