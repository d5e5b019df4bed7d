"""Putting a spec into an ONNX file: used by export, and for models exported by something else."""

from __future__ import annotations

import json
import os
from typing import Any

from edgeinfer import importers as sources
from edgeinfer.errors import ModelError
from edgeinfer.tools.files import write_bytes_atomic
from edgeinfer.spec import METADATA_KEY, Spec


def write_with_spec(proto: Any, path: str | os.PathLike, spec: Spec) -> None:
    """Store ``spec`` in the model's metadata (other metadata kept) and write it atomically to ``path``."""
    meta = {p.key: p.value for p in proto.metadata_props}
    meta[METADATA_KEY] = spec.validate().to_json()
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    write_bytes_atomic(path, proto.SerializeToString())


def _session(proto: Any, src: str | os.PathLike) -> Any:
    """The graph on ONNX Runtime's CPU provider, with the engine surface ``importers.resolve`` reads."""
    import onnxruntime as ort

    from edgeinfer.engines.onnxruntime import OrtSession

    try:
        return OrtSession(ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{src}: expected an ONNX model ONNX Runtime can load, it failed: {exc}") from exc


def spec_for(model: str | os.PathLike, source: Any, **options: Any) -> Spec:
    """The spec ``source`` gives this ONNX model, checked against it, without writing anything.

    ``source`` and ``options`` (``labels``, ``output_kind``, ``hf_backend``, ``loader_color``) are
    those of :func:`edgeinfer.importers.resolve`.
    """
    import onnx

    return sources.resolve(source, _session(onnx.load(str(model)), model), path=model, **options)


def attach_spec(src: str | os.PathLike, dst: str | os.PathLike, source: Any, **options: Any) -> Spec:
    """Write ``src`` to ``dst`` with the spec from ``source``, checked against the model's input first.

    ``source`` is anything :func:`edgeinfer.importers.resolve` reads: an edgeinfer spec (object, dict, JSON
    file), a plain ``{size, mean, std, interpolation}`` dict, a Hugging Face ``preprocessor_config.json``,
    a torchvision/timm transform or ``"timm:NAME"``. Nothing is written when the spec does not fit.
    """
    import onnx

    proto = onnx.load(str(src))
    spec = sources.resolve(source, _session(proto, src), path=src, **options)
    write_with_spec(proto, dst, spec)
    return spec


def spec_json(path: str | os.PathLike) -> dict[str, Any]:
    """The spec stored in a model file, as plain data (for inspection and edits in tools)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if METADATA_KEY not in meta:
        raise ModelError(f"{path}: no {METADATA_KEY!r} in the model metadata.")
    return json.loads(meta[METADATA_KEY])
