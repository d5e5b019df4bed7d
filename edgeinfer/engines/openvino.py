"""OpenVINO, through its own API (not ONNX Runtime's OpenVINO execution provider): it reads the ``.onnx`` itself,
or the IR ``edgeinfer convert --engine openvino`` wrote beside it (``MODEL.openvino/model.xml``).

Compiled for f32 inference: OpenVINO's CPU plugin would otherwise pick bf16 on CPUs that have it, which is not the
graph edgeinfer verified. The graph keeps the ONNX file's names, layout and output order (its frontend maps
them one to one); an IR is checked against the ports recorded when it was written.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np
import openvino as ov

from edgeinfer import providers
from edgeinfer.engines import base
from edgeinfer.errors import ModelError

NAME = "openvino"
DEVICE = "CPU"
IR = "model.xml"
# OpenVINO's element type names -> ONNX Runtime's spelling of the ONNX type
_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "f64": "tensor(double)", "u8": "tensor(uint8)",
          "i8": "tensor(int8)", "i32": "tensor(int32)", "i64": "tensor(int64)", "boolean": "tensor(bool)"}


def version() -> str:
    return ov.get_version().split("-")[0]


def _port(p: Any, onnx_names: Sequence[str]) -> base.Port:
    """A port named as the ONNX graph names it: OpenVINO gives a tensor every name that flowed into it (an fp16
    variant's input is also its Cast's output, ``graph_input_cast_0``), and ``get_any_name`` may pick another."""
    shape = tuple(d.get_length() if d.is_static else None for d in p.get_partial_shape())
    kind = p.get_element_type().get_type_name()
    names = p.get_names()
    name = next((n for n in onnx_names if n in names), p.get_any_name())
    return base.Port(name, shape, _TYPES.get(kind, f"openvino({kind})"))


class _Pending:
    """One asynchronous infer request in flight (``OpenVINOSession.submit``); the request goes back to the session's
    idle pool once its outputs are copied out."""

    def __init__(self, session: "OpenVINOSession", request: Any, names: Sequence[str],
                 feed: Mapping[str, np.ndarray]) -> None:
        self.session, self.request, self.names = session, request, list(names)
        # share_inputs: the request reads the caller's arrays in place (no copy of a 640x640 input per frame); this
        # reference keeps them, and so keeps a reusing pool (the stream's _Buffers) from handing them out, until done.
        # (OpenVINO's shared tensor also holds the last array a request read until its next run: harmless, it is
        # never written through.)
        self.feed: Mapping[str, np.ndarray] | None = feed
        self.outputs: list[np.ndarray] | None = None
        self.submitted = time.perf_counter()
        self.done = float("nan")
        request.start_async(dict(feed), share_inputs=True)

    def ready(self) -> bool:
        return self.outputs is not None or (self.feed is not None and bool(self.request.wait_for(0)))

    def wait(self) -> list[np.ndarray]:
        if self.outputs is not None:
            return self.outputs
        if self.feed is None:  # released after a failed wait: the request may already run someone else's frame
            raise ModelError("openvino: this inference failed before (the first wait() raised why); submit it again.")
        try:
            self.request.wait()
            # latency: start_async to completion, stamped by OpenVINO's own callback (not when this thread got here)
            self.done = self.submitted + self.request.latency / 1e3
            index = self.session._index
            # copies: the request's output buffers are overwritten by its next run
            self.outputs = [np.array(self.request.get_output_tensor(index[n]).data) for n in self.names]
        finally:
            self.feed = None
            self.session._release(self.request)
        return self.outputs


class OpenVINOSession:
    """A compiled OpenVINO model; one infer request per calling thread, so ``run`` is safe from several threads, and
    a pool of asynchronous requests for ``submit`` (several frames in flight)."""

    engine = NAME

    def __init__(self, compiled: Any, metadata: Mapping[str, str], artifact: Mapping[str, Any] | None,
                 onnx_io: tuple[Sequence[str], Sequence[str]] = ((), ())) -> None:
        self.version = version()
        self.artifact = artifact
        self.metadata = metadata
        self.compiled = compiled
        self.requested = (f"openvino:{DEVICE}",)
        self._inputs = [_port(p, onnx_io[0]) for p in compiled.inputs]
        self._outputs = [_port(p, onnx_io[1]) for p in compiled.outputs]
        self._index = {p.name: i for i, p in enumerate(self._outputs)}
        self._local = threading.local()
        self._idle: list[Any] = []  # asynchronous requests not in flight, reused by submit
        self._idle_lock = threading.Lock()

    def get_inputs(self) -> list[base.Port]:
        return self._inputs

    def get_outputs(self) -> list[base.Port]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return [f"openvino:{DEVICE}"]

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if names is None:  # as InferenceSession.run(None, ...): every output, in the graph's order
            names = [o.name for o in self.get_outputs()]
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        missing = [n for n in names if n not in self._index]
        if missing:
            raise ModelError(f"openvino: expected outputs among {list(self._index)}, found a request for {missing}.")
        result = request.infer(dict(feed))  # copies the outputs out of the request's own buffers
        return [np.asarray(result[self._index[n]]) for n in names]

    def submit(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> _Pending:
        """Start the graph on ``feed`` in an infer request of its own and return at once; ``wait()`` on the handle
        gives what ``run(names, feed)`` would. OpenVINO runs the requests of a LATENCY-compiled model one after the
        other, in the order submitted, each on all its threads."""
        missing = [n for n in names if n not in self._index]
        if missing:
            raise ModelError(f"openvino: expected outputs among {list(self._index)}, found a request for {missing}.")
        with self._idle_lock:
            request = self._idle.pop() if self._idle else None
        if request is None:
            request = self.compiled.create_infer_request()
        try:
            return _Pending(self, request, names, feed)
        except BaseException:
            self._release(request)
            raise

    def _release(self, request: Any) -> None:
        with self._idle_lock:
            self._idle.append(request)


def open(path: str | os.PathLike, *, profile: providers.Profile, threads: int | None = None, strict: bool = False,
         session_config: Mapping[str, str] | None = None) -> OpenVINOSession:
    """The model compiled for OpenVINO's CPU plugin: the IR beside ``path`` when ``edgeinfer convert`` wrote one,
    else the ``.onnx`` read directly. ``threads`` (else the profile's intra-op threads) sets its inference
    threads; ``session_config`` entries go to ``compile_model``'s config as they are."""
    core = ov.Core()
    folder = base.artifact_dir(path, NAME)
    record = base.read_record(folder) if (folder / IR).is_file() else None
    source = folder / IR if record is not None else path
    try:
        model = core.read_model(str(source))
    except Exception as exc:  # OpenVINO raises its own untyped errors for unreadable files
        raise ModelError(f"{source}: expected a model OpenVINO can read, it failed: {exc}") from exc
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    n = profile.intra_op_threads if threads is None else threads
    if n:
        config["INFERENCE_NUM_THREADS"] = int(n)
    config.update({str(k): str(v) for k, v in (session_config or {}).items()})
    try:
        compiled = core.compile_model(model, DEVICE, config)
    except Exception as exc:
        raise ModelError(f"{source}: OpenVINO could not compile it for {DEVICE}: {exc}") from exc
    metadata, inputs, outputs = base.onnx_facts(path)
    session = OpenVINOSession(compiled, metadata, record, (inputs, outputs))
    if record is not None:
        base.check_ports(session, record, str(source))
    return session
