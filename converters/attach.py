"""Putting a spec into an ONNX file: used by export, and for models exported by something else."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from edgeinfer.errors import ModelError
from edgeinfer.files import write_bytes_atomic
from edgeinfer.spec import METADATA_KEY, Spec


def write_with_spec(proto: Any, path: str | os.PathLike, spec: Spec) -> None:
    """Store ``spec`` in the model's metadata (other metadata kept) and write it atomically to ``path``."""
    meta = {p.key: p.value for p in proto.metadata_props}
    meta[METADATA_KEY] = spec.validate().to_json()
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    write_bytes_atomic(path, proto.SerializeToString())


def _as_spec(source: Any) -> Spec:
    if isinstance(source, Spec):
        return source.validate()
    if isinstance(source, Mapping):
        return Spec.from_dict(source)
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        return Spec.from_json(Path(source).read_text())
    raise ModelError(f"spec source: expected an edgeinfer Spec, a dict or a JSON file, found {type(source).__name__}.")


def attach_spec(src: str | os.PathLike, dst: str | os.PathLike, source: Any) -> Spec:
    """Write ``src`` with the spec from ``source`` to ``dst``, after checking it against the model's input."""
    import onnx
    import onnxruntime as ort

    spec = _as_spec(source)
    proto = onnx.load(str(src))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    if spec.input.name not in inputs:
        raise ModelError(f"{src}: the spec names input {spec.input.name!r}, the model has {sorted(inputs)}.")
    shape = inputs[spec.input.name]
    want = list(spec.input.shape)
    if len(shape) != len(want) or any(isinstance(m, int) and w is not None and m != w for m, w in zip(shape, want)):
        raise ModelError(f"{src}: input {spec.input.name!r} is {shape} in the model but {want} in the spec.")
    write_with_spec(proto, dst, spec)
    return spec


def spec_json(path: str | os.PathLike) -> dict[str, Any]:
    """The spec stored in a model file, as plain data (for inspection and edits in tools)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if METADATA_KEY not in meta:
        raise ModelError(f"{path}: no {METADATA_KEY!r} in the model metadata.")
    return json.loads(meta[METADATA_KEY])
