"""LiteRT (ai-edge-litert, formerly TensorFlow Lite) on its default CPU delegate, XNNPACK: runs the ``.tflite``
``edgeinfer convert --engine litert`` wrote beside the model (``MODEL.litert/model.tflite``); it cannot read the
``.onnx`` itself.

The .tflite keeps the ONNX graph's tensor names (onnx2tf writes them) but is channels-last: an image input
``[N, 3, H, W]`` is ``[N, H, W, 3]`` there, and so is any 4-D output. The record written at conversion holds, for
each ONNX port, the .tflite tensor it is and the axis order that maps one onto the other (found at conversion
by shape and checked there against ONNX Runtime's outputs); the adapter transposes through it, so the model sees
the ONNX graph's names, layout, output order and element types, and the ports it builds from the .tflite are
checked against the record at load.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Mapping, Sequence

import ai_edge_litert
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgeinfer import providers
from edgeinfer.engines import base
from edgeinfer.errors import ModelError

NAME = "litert"
TFLITE = "model.tflite"
PROVIDER = "litert:xnnpack"
# numpy's element types -> ONNX Runtime's spelling of the ONNX type
_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)",
          "uint8": "tensor(uint8)", "int8": "tensor(int8)", "int32": "tensor(int32)", "int64": "tensor(int64)",
          "bool": "tensor(bool)"}


def version() -> str:
    return str(ai_edge_litert.__version__)


def onnx_type(dtype: Any) -> str:
    name = np.dtype(dtype).name
    return _TYPES.get(name, f"litert({name})")


def _shape(signature: Sequence[int], perm: Sequence[int]) -> tuple[int | None, ...]:
    """A .tflite shape signature (-1: dynamic) in the ONNX port's axis order (None: dynamic)."""
    return tuple(None if signature[p] < 0 else int(signature[p]) for p in np.argsort(perm))


class LiteRTSession:
    """A .tflite with one LiteRT Interpreter per calling thread, made on first use: an Interpreter holds its input
    and output tensors itself and is not safe to call from two threads, and a lock would make a server's workers
    wait on each other; the price is one copy of XNNPACK's packed weights per thread."""

    engine = NAME

    def __init__(self, model: str, record: Mapping[str, Any], metadata: Mapping[str, str], threads: int | None,
                 xnnpack: bool = True) -> None:
        self.version = version()
        self.provider = PROVIDER if xnnpack else "litert:cpu"
        self.requested = (self.provider,)
        self.artifact = record
        self.metadata = metadata
        self.model = model
        self._threads = threads
        # AUTO: the builtin kernels with XNNPACK applied to the graph (LiteRT's default on a CPU)
        self._resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self._local = threading.local()
        first = self._interpreter()
        tensors = {d["name"]: d for d in first.get_input_details() + first.get_output_details()}
        self._inputs, self._outputs = [], []
        self._in: dict[str, tuple[int, tuple[int, ...]]] = {}  # ONNX name -> (.tflite tensor index, axis order)
        self._out: dict[str, tuple[int, tuple[int, ...]]] = {}
        layout = record.get("litert") or {}
        for side, ports, index in (("inputs", self._inputs, self._in), ("outputs", self._outputs, self._out)):
            for entry in layout.get(side, []):
                d = tensors.get(entry["tensor"])
                if d is None or len(entry["perm"]) != len(d["shape_signature"]):
                    raise ModelError(f"{model}: the record maps the ONNX {side[:-1]} {entry['name']!r} to the .tflite "
                                     f"tensor {entry['tensor']!r} (axes {entry['perm']}); the .tflite's {side} are "
                                     f"{[(k, v['shape_signature'].tolist()) for k, v in tensors.items()]}. Re-run "
                                     "edgeinfer convert on the .onnx.")
                perm = tuple(int(p) for p in entry["perm"])
                ports.append(base.Port(entry["name"], _shape(d["shape_signature"], perm), onnx_type(d["dtype"])))
                index[entry["name"]] = (int(d["index"]), perm)

    def _interpreter(self) -> Any:
        it = getattr(self._local, "interpreter", None)
        if it is None:
            it = Interpreter(model_path=self.model, num_threads=self._threads,
                             experimental_op_resolver_type=self._resolver)
            it.allocate_tensors()
            self._local.interpreter = it
        return it

    def get_inputs(self) -> list[base.Port]:
        return self._inputs

    def get_outputs(self) -> list[base.Port]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return [self.provider]

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if names is None:  # as InferenceSession.run(None, ...): every output, in the graph's order
            names = [o.name for o in self._outputs]
        missing = [n for n in names if n not in self._out]
        if missing:
            raise ModelError(f"litert: expected outputs among {list(self._out)}, found a request for {missing}.")
        it = self._interpreter()
        values = {}
        for name, value in feed.items():
            if name not in self._in:
                raise ModelError(f"litert: expected inputs {list(self._in)}, found {name!r}.")
            index, perm = self._in[name]
            values[index] = np.ascontiguousarray(np.transpose(value, perm))
        current = {d["index"]: tuple(d["shape"]) for d in it.get_input_details()}
        resized = [i for i, v in values.items() if current[i] != v.shape]
        for i in resized:  # a batch or an image size the interpreter is not laid out for yet (dynamic axes)
            it.resize_tensor_input(i, list(values[i].shape), strict=True)
        if resized:
            it.allocate_tensors()
        for i, v in values.items():
            it.set_tensor(i, v)
        it.invoke()
        out = []
        for name in names:
            index, perm = self._out[name]
            out.append(np.ascontiguousarray(np.transpose(it.get_tensor(index), np.argsort(perm))))  # a copy
        return out


def open(path: str | os.PathLike, *, profile: providers.Profile, threads: int | None = None, strict: bool = False,
         session_config: Mapping[str, str] | None = None) -> LiteRTSession:
    """The .tflite beside ``path`` on LiteRT's CPU with XNNPACK, ``threads`` (else the profile's intra-op threads;
    0: LiteRT's default) as its ``num_threads``. ``session_config``: ``{"xnnpack": "0"}`` runs LiteRT's own
    builtin kernels without XNNPACK (to tell a delegate's difference from the graph's)."""
    folder = base.artifact_dir(path, NAME)
    if not (folder / TFLITE).is_file():
        raise ModelError(f"{path}: LiteRT runs its own .tflite, found none in {folder}. Make it on the workstation: "
                         f"edgeinfer convert {path} --engine litert (needs onnx2tf: see the README's engine table).")
    record = base.read_record(folder)
    config = dict(session_config or {})
    unknown = sorted(set(config) - {"xnnpack"})
    if unknown:
        raise ModelError(f"litert: session_config {unknown} are not LiteRT options; options: ['xnnpack'] "
                         "('0': LiteRT's builtin kernels without XNNPACK).")
    xnnpack = str(config.get("xnnpack", "1")).lower() not in ("0", "false")
    n = profile.intra_op_threads if threads is None else threads
    try:
        session = LiteRTSession(str(folder / TFLITE), record, base.onnx_metadata(path), int(n) if n else None,
                                xnnpack)
    except (ValueError, RuntimeError) as exc:  # LiteRT's own errors for a file it cannot read or prepare
        raise ModelError(f"{folder / TFLITE}: LiteRT could not load it: {exc}. Re-run edgeinfer convert {path} "
                         "--engine litert.") from exc
    base.check_ports(session, record, str(folder / TFLITE))
    return session
