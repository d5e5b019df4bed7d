"""What every engine adapter gives the model: the graph's ports, its metadata, and a run.

The surface is ONNX Runtime's own (``get_inputs()``, ``get_outputs()``, ``run(names, feed)``,
``get_providers()``), so the importers and the input contract check a graph the same way whichever engine loaded
it. Names, shapes, element types and the order of outputs are the ONNX file's: an adapter whose engine stores the
graph otherwise (another layout, renamed tensors) maps them back and checks them at load.

An engine artifact (``edgeinfer convert MODEL.onnx --engine NAME``) is a folder beside the model,
``MODEL.NAME/``, holding the engine's files and ``edgeinfer.json``: the spec's hash, the ONNX graph's ports and
the parity measured against ONNX Runtime when it was written. The device refuses it when the model's spec no
longer hashes the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from edgeinfer.errors import ModelError

RECORD = "edgeinfer.json"


class Port(NamedTuple):
    """One input or output of the graph, spelled as ONNX Runtime's NodeArg: ``type`` is e.g. ``tensor(float)``;
    a dynamic axis is None."""

    name: str
    shape: tuple[int | None, ...]
    type: str


class Session(Protocol):
    """An engine's loaded graph, as :class:`~edgeinfer.model.Model` uses it."""

    engine: str  # the engine table's name
    version: str  # the engine's version
    artifact: Mapping[str, Any] | None  # the artifact's record when the engine runs one, else None (the .onnx)
    metadata: Mapping[str, str]  # the ONNX file's metadata_props (the spec is under edgeinfer.spec)

    def get_inputs(self) -> Sequence[Any]: ...

    def get_outputs(self) -> Sequence[Any]: ...

    def get_providers(self) -> list[str]: ...

    # names None: every output in the graph's order, as InferenceSession.run(None, feed) (scripts use it)
    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...

    # Optional, for an engine with an asynchronous API (OpenVINO's infer requests): start the graph on ``feed`` and
    # return at once, several calls in flight, so a camera loop overlaps inference with capture, preprocessing and
    # the previous frame's decoding. The handle keeps ``feed`` alive until its outputs are in hand: an engine may
    # read the caller's arrays in place while it runs. Engines without it are run with ``run`` (Model.submit).
    # def submit(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> Pending: ...


class Pending(Protocol):
    """A graph run started by ``Session.submit`` (or already finished: :class:`Finished`)."""

    submitted: float  # time.perf_counter() when it was started

    def ready(self) -> bool: ...  # whether wait() would return at once

    # the outputs, as run(names, feed) gives them; waits until the engine is done. Called again, the same list.
    def wait(self) -> list[np.ndarray]: ...

    done: float  # after wait(): time.perf_counter() when the engine finished (measured by the engine, not by wait)


class Finished:
    """The handle of a run that already happened (an engine without ``submit`` runs at once)."""

    def __init__(self, outputs: list[np.ndarray], submitted: float, done: float) -> None:
        self.outputs, self.submitted, self.done = outputs, submitted, done

    def ready(self) -> bool:
        return True

    def wait(self) -> list[np.ndarray]:
        return self.outputs


def _varint(buf: Any, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, i


def _fields(buf: Any) -> Any:
    """(field number, wire type, value) of a protobuf message's top level; length-delimited values as memoryviews,
    skipped without being parsed (the graph of a large model is one such field)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wire} at byte {i}")
        yield field, wire, value


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (ModelProto field 14), read from the protobuf's top level without loading
    the graph: the spec an engine artifact must match comes from the .onnx, not from the artifact's own copy."""
    return onnx_facts(path)[0]


def onnx_facts(path: str | os.PathLike) -> tuple[dict[str, str], tuple[str, ...], tuple[str, ...]]:
    """An ONNX file's ``metadata_props`` and the names of its graph's inputs and outputs, in order (GraphProto
    fields 11 and 12, each a ValueInfoProto named by its field 1), read without parsing the graph's nodes."""
    meta: dict[str, str] = {}
    inputs: list[str] = []
    outputs: list[str] = []
    try:
        view = memoryview(Path(path).read_bytes())
        for field, wire, value in _fields(view):
            if field == 14 and wire == 2:
                entry = {k: bytes(v).decode() for k, w, v in _fields(value) if w == 2}
                meta[entry.get(1, "")] = entry.get(2, "")
            elif field == 7 and wire == 2:  # the graph: only its input and output lists are read
                for gfield, gwire, gvalue in _fields(value):
                    if gfield in (11, 12) and gwire == 2:
                        name = next((bytes(v).decode() for k, w, v in _fields(gvalue) if k == 1 and w == 2), "")
                        (inputs if gfield == 11 else outputs).append(name)
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: expected an ONNX file, found one whose metadata cannot be read ({exc}).") from exc
    return meta, tuple(inputs), tuple(outputs)


def ports(nodes: Sequence[Any]) -> list[dict[str, Any]]:
    """Ports (or ONNX Runtime NodeArgs) as JSON-ready dicts; symbolic axes become null."""
    return [{"name": n.name, "shape": [d if isinstance(d, int) else None for d in n.shape], "type": n.type}
            for n in nodes]


def spec_hash(spec: Any) -> str:
    """The sha256 of a spec's canonical JSON: what an engine artifact is bound to."""
    text = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def artifact_dir(model: str | os.PathLike, engine: str) -> Path:
    """Where engine ``engine``'s artifact of ``model.onnx`` lives: ``model.<engine>/`` beside it."""
    p = Path(model)
    return p.with_name(f"{p.stem}.{engine}")


def variant_path(path: str | os.PathLike, precision: str) -> Path:
    """Where the ``precision`` variant of a model lives: ``model.onnx`` -> ``model.fp16.onnx``."""
    p = Path(path)
    return p if precision == "fp32" else p.with_name(f"{p.stem}.{precision}{p.suffix}")


def read_record(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: expected an engine artifact with its {RECORD} record, found none readable "
                         f"({exc}). Re-run edgeinfer convert on the .onnx, or delete the folder to run the .onnx "
                         "itself.") from exc


def check_ports(session: Session, record: Mapping[str, Any], where: str) -> None:
    """Refuse an artifact whose graph does not take and give what the ONNX graph it came from did (names, element
    types, rank and fixed axes, output order)."""
    for side, have in (("inputs", ports(session.get_inputs())), ("outputs", ports(session.get_outputs()))):
        want = record.get(side, [])
        same = len(want) == len(have) and all(
            w["name"] == h["name"] and w["type"] == h["type"] and len(w["shape"]) == len(h["shape"])
            and all(a is None or b is None or a == b for a, b in zip(w["shape"], h["shape"]))
            for w, h in zip(want, have))
        if not same:
            raise ModelError(f"{where}: the engine's graph {side} are {have}; the ONNX graph it was converted from "
                             f"had {want}. Re-run edgeinfer convert on the .onnx.")


def check_artifact(session: Session, spec: Any, where: str) -> None:
    """Refuse an engine artifact made for another spec than the model's (the model was re-exported or edited
    after ``edgeinfer convert``)."""
    record = session.artifact
    if record is None:
        return
    want, have = record.get("spec_sha256"), spec_hash(spec)
    if want != have:
        raise ModelError(f"{where}: the {session.engine} artifact was made for the spec with hash {str(want)[:12]}…; "
                         f"the model's spec hashes to {have[:12]}… (the model changed after the artifact was "
                         f"written). Re-run: edgeinfer convert {where} --engine {session.engine}")
