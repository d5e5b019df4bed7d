"""The engines that run a model's graph: a table of name -> adapter module, each imported only when asked for.

Preprocessing, input contracts, decoders, NMS and geometry are edgeinfer's whatever the engine: an engine only runs
the graph. Every adapter module (one per engine, in this package) has the same surface::

    NAME: str                      # the table's key
    def version() -> str           # the engine's version, for reports
    def open(path, *, profile, threads, strict, session_config) -> Session   # edgeinfer.engines.base.Session

``open`` reads the ``.onnx`` itself or, where the workstation wrote one (``edgeinfer convert --engine``), the
engine's artifact beside it, checked against the model at load. ``import edgeinfer`` imports none of the engine
packages; a missing one is a :class:`~edgeinfer.errors.DependencyError` naming the pip command.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from edgeinfer.errors import DependencyError, ModelError


@dataclass(frozen=True)
class Engine:
    """One row of the table: where its adapter is, what it imports, and how to install that."""

    adapter: str  # the adapter module
    package: str  # the module the engine itself is imported as
    install: str  # the pip command that installs it


ENGINES: dict[str, Engine] = {
    "onnxruntime": Engine("edgeinfer.engines.onnxruntime", "onnxruntime", "pip install onnxruntime"),
    "openvino": Engine("edgeinfer.engines.openvino", "openvino", "pip install 'edgeinfer[openvino]'"),
    "ncnn": Engine("edgeinfer.engines.ncnn", "ncnn", "pip install 'edgeinfer[ncnn]'"),
}
DEFAULT = "onnxruntime"


def names() -> tuple[str, ...]:
    return tuple(ENGINES)


def entry(name: str) -> Engine:
    if name not in ENGINES:
        raise ModelError(f"engine: expected one of {list(ENGINES)}, found {name!r}.")
    return ENGINES[name]


def adapter(name: str) -> ModuleType:
    """The adapter module of engine ``name``, importing the engine's package now (DependencyError when missing)."""
    row = entry(name)
    try:
        importlib.import_module(row.package)
    except ImportError as exc:
        raise DependencyError(f"engine {name!r} needs the {row.package!r} package, which is not importable here "
                              f"({exc}). Install it: {row.install}") from exc
    return importlib.import_module(row.adapter)


def installed(name: str) -> bool:
    """Whether engine ``name``'s package is importable here (without importing it)."""
    return importlib.util.find_spec(entry(name).package) is not None
