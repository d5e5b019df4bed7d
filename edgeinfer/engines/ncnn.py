"""ncnn (Tencent's engine, the one Pi users pick): runs the ``param``/``bin`` pair ``edgeinfer convert --engine ncnn``
wrote beside the model (``MODEL.ncnn/model.ncnn.param``); it cannot read the ``.onnx`` itself.

pnnx names the graph's tensors ``in0, in1, ...`` and ``out0, out1, ...`` in the ONNX graph's order; the adapter maps
them back to the ONNX names recorded beside the files, so the model sees the ONNX graph's ports. ncnn runs one image
at a time (its tensors have no batch axis): a batch is run image by image and stacked. Arithmetic and storage stay
float32 (ncnn would store fp16/bf16 where the CPU has it, which is not the graph that was verified).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import ncnn
import numpy as np

from edgeinfer import providers
from edgeinfer.engines import base
from edgeinfer.errors import ModelError

NAME = "ncnn"
PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"


def version() -> str:
    return str(ncnn.__version__)


class NcnnSession:
    """A loaded ncnn Net; each run makes its own extractor, so ``run`` is safe from several threads."""

    engine = NAME
    requested = ("ncnn:cpu",)

    def __init__(self, net: Any, record: Mapping[str, Any], metadata: Mapping[str, str]) -> None:
        self.version = version()
        self.artifact = record
        self.metadata = metadata
        self.net = net
        self._inputs = [base.Port(p["name"], tuple(p["shape"]), p["type"]) for p in record["inputs"]]
        self._outputs = [base.Port(p["name"], tuple(p["shape"]), p["type"]) for p in record["outputs"]]
        self._in = {p.name: f"in{i}" for i, p in enumerate(self._inputs)}
        self._out = {p.name: f"out{i}" for i, p in enumerate(self._outputs)}

    def get_inputs(self) -> list[base.Port]:
        return self._inputs

    def get_outputs(self) -> list[base.Port]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return ["ncnn:cpu"]

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if names is None:  # as InferenceSession.run(None, ...): every output, in the graph's order
            names = [o.name for o in self.get_outputs()]
        missing = [n for n in names if n not in self._out]
        if missing:
            raise ModelError(f"ncnn: expected outputs among {list(self._out)}, found a request for {missing}.")
        n = len(next(iter(feed.values())))
        per: list[list[np.ndarray]] = [[] for _ in names]
        for i in range(n):
            with self.net.create_extractor() as ex:
                for name, value in feed.items():
                    ex.input(self._in[name], ncnn.Mat(np.ascontiguousarray(value[i], dtype=np.float32)).clone())
                for j, name in enumerate(names):
                    ret, mat = ex.extract(self._out[name])
                    if ret != 0:
                        raise ModelError(f"ncnn: extracting {name!r} ({self._out[name]}) failed with code {ret}.")
                    per[j].append(np.array(mat)[None])
        return [np.concatenate(parts) for parts in per]


def open(path: str | os.PathLike, *, profile: providers.Profile, threads: int | None = None, strict: bool = False,
         session_config: Mapping[str, str] | None = None) -> NcnnSession:
    """The ncnn files beside ``path`` with ``threads`` (else the profile's intra-op threads; 0: ncnn's default).
    ``session_config`` sets ncnn's options by name, e.g. ``{"openmp_blocktime": "0"}`` (no spinning after a run:
    ncnn's threads otherwise spin 20 ms, taking the cores from whatever runs next)."""
    folder = base.artifact_dir(path, NAME)
    if not (folder / PARAM).is_file():
        raise ModelError(f"{path}: ncnn runs its own param/bin files, found none in {folder}. Make them on the "
                         f"workstation: edgeinfer convert {path} --engine ncnn (needs pip install pnnx).")
    record = base.read_record(folder)
    net = ncnn.Net()
    for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage", "use_bf16_packed"):
        setattr(net.opt, flag, False)
    n = profile.intra_op_threads if threads is None else threads
    if n:
        net.opt.num_threads = int(n)
    for key, value in (session_config or {}).items():
        if not hasattr(net.opt, key) or key.endswith("allocator"):
            raise ModelError(f"ncnn: session_config {key!r} is not an ncnn option; options: "
                             f"{sorted(k for k in dir(net.opt) if not k.startswith('_') and 'allocator' not in k)}.")
        current = getattr(net.opt, key)
        setattr(net.opt, key, str(value).lower() in ("1", "true") if isinstance(current, bool) else type(current)(value))
    if net.load_param(str(folder / PARAM)) != 0 or net.load_model(str(folder / BIN)) != 0:
        raise ModelError(f"{folder}: ncnn could not load {PARAM}/{BIN}. Re-run edgeinfer convert {path} --engine ncnn.")
    return NcnnSession(net, record, base.onnx_metadata(path))
