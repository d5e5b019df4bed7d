"""Faster variants of an exported model that stay faithful: graph-optimised, fp16 and int8 (QDQ).

Every variant keeps the spec metadata, is checked against the fp32 model on held-out images through
the edgeinfer runtime, and is refused (not written) when its top-1 agreement falls below the gate.
int8 calibration feeds images through the model's own edgeinfer preprocessor, so it sees the pixels
the device will see.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from edgeinfer.errors import EdgeInferError, ImageError
from edgeinfer.tools.files import write_bytes_atomic
from edgeinfer.pipeline.images import image_files

KINDS = ("graph", "fp16", "int8")


class OptimizationRefused(EdgeInferError):
    """A variant fell below the agreement gate and was not written."""


@dataclass(frozen=True)
class OptimizeReport:
    """What was produced, and how well it agrees with the fp32 model on held-out images."""

    kind: str
    source: str
    output: str
    written: bool
    images: int
    holdout_is_calibration: bool
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    min_agreement: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _images(source: Any) -> list[Any]:
    if source is None:
        return []
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        return list(image_files(source))
    return list(source)


def default_output(src: Path, kind: str) -> Path:
    """``model.onnx`` -> ``model.fp16.onnx`` / ``model.int8.onnx`` / ``model.opt.onnx``."""
    return src.with_name(f"{src.stem}.{'opt' if kind == 'graph' else kind}{src.suffix}")


class _Calibration:
    """ONNX Runtime CalibrationDataReader over images preprocessed by the model's own spec."""

    def __init__(self, model: Any, images: Sequence[Any]) -> None:
        self._model = model
        self._items = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        for item in self._items:
            try:
                return {self._model.spec.input.name: self._model.preprocessor.batch([item])}
            except ImageError:
                continue  # an unreadable calibration file is skipped, not fatal
        return None


def _convert(kind: str, src: Path, model: Any, calibration: Sequence[Any], tmp: Path) -> Any:
    import onnx
    import onnxruntime as ort

    if kind == "graph":
        opts = ort.SessionOptions()
        # "extended" is portable across machines; "all" adds layout changes specific to this CPU.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(tmp / "opt.onnx")
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        return onnx.load(str(tmp / "opt.onnx"))
    if kind == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ImageError("int8 quantisation needs calibration images: pass a folder (--calibration DIR).")
    pre = tmp / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(tmp / "int8.onnx"), _Calibration(model, calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return onnx.load(str(tmp / "int8.onnx"))


def variant_bytes(kind: str, src: Path, model: Any, calibration: Sequence[Any]) -> bytes:
    """The serialised ``kind`` variant of ``src`` with the source's metadata (its spec) copied in, unchecked:
    ``optimize`` gates it by top-1 agreement, ``tune`` by the task's own gate."""
    import onnx

    with tempfile.TemporaryDirectory() as tmpdir:
        proto = _convert(kind, src, model, calibration, Path(tmpdir))
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    del proto.metadata_props[:]
    for key, value in meta.items():  # the spec (and any other metadata) travels with the variant
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def optimize(src: str | os.PathLike, dst: str | os.PathLike | None = None, *, kind: str,
             calibration: Any = None, holdout: Any = None, min_agreement: float = 0.99, force: bool = False,
             max_calibration: int = 128) -> OptimizeReport:
    """Write a ``kind`` variant of ``src`` ("graph", "fp16" or "int8") and return its agreement report.

    ``calibration`` (int8) and ``holdout`` are folders or lists of images. Without ``holdout`` the
    calibration images are also the agreement set (reported as such). Below ``min_agreement`` top-1
    agreement with the fp32 model the variant is not written and :class:`OptimizationRefused` is raised,
    unless ``force``.
    """
    import edgeinfer

    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, found {kind!r}")
    src = Path(src)
    out = Path(dst) if dst is not None else default_output(src, kind)
    reference = edgeinfer.load(src)
    calib = _images(calibration)[:max_calibration]
    check = _images(holdout) or calib
    if not check:
        raise ImageError("optimize needs images to check agreement on: pass holdout or calibration images.")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        data = variant_bytes(kind, src, reference, calib)
        candidate = tmp / "candidate.onnx"
        candidate.write_bytes(data)
        variant = edgeinfer.load(candidate)
        ref_p, var_p = [], []
        for item in check:
            try:
                ref_p.append(reference.predict(item).scores)
            except ImageError:
                continue
            var_p.append(variant.predict(item).scores)
        ref, var = np.stack(ref_p), np.stack(var_p)
        agreement = float(np.mean(ref.argmax(1) == var.argmax(1)))
        diff = np.abs(ref.astype(np.float64) - var)
        report = OptimizeReport(kind=kind, source=str(src), output=str(out), written=False, images=len(ref),
                                holdout_is_calibration=not _images(holdout), top1_agreement=agreement,
                                max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
                                min_agreement=min_agreement, size_bytes=len(data))
        if agreement < min_agreement and not force:
            raise OptimizationRefused(
                f"{kind} variant of {src.name}: top-1 agreement with fp32 is {agreement:.1%} on {len(ref)} images, "
                f"below the gate of {min_agreement:.1%} (max |dp| {report.max_abs_diff:.3f}); not written. Use more "
                "representative calibration images, another variant, or force=True to write it anyway.")
        write_bytes_atomic(out, data)
    return OptimizeReport(**{**report.to_dict(), "written": True})
