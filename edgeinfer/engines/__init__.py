"""The engines that run a model's graph: a table of name -> adapter module, each imported only when asked for.

Preprocessing, input contracts, decoders, NMS and geometry are edgeinfer's whatever the engine: an engine only runs
the graph. Every adapter module (one per engine, in this package) has the same surface::

    NAME: str                      # the table's key
    def version() -> str           # the engine's version, for reports
    def open(path, *, profile, threads, strict, session_config) -> Session   # edgeinfer.engines.base.Session

A Session whose engine runs a graph asynchronously also has ``submit(names, feed) -> Pending`` (OpenVINO: its infer
requests), which the camera loop uses to keep several frames in the engine; engines without it run one at a time.

``open`` reads the ``.onnx`` itself or, where the workstation wrote one (``edgeinfer convert --engine``), the
engine's artifact beside it, checked against the model at load. ``import edgeinfer`` imports none of the engine
packages; a missing one is a :class:`~edgeinfer.errors.DependencyError` naming the pip command.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edgeinfer.errors import DependencyError, ModelError


class EngineFallbackWarning(UserWarning):
    """``engine="auto"`` skipped an engine the device profile prefers (not installed, or no files for this model), or
    ignored tune's choice for the model (made for another device or spec, or its files missing)."""


@dataclass(frozen=True)
class Engine:
    """One row of the table: where its adapter is, what it imports, and how to install that."""

    adapter: str  # the adapter module
    package: str  # the module the engine itself is imported as
    install: str  # the pip command that installs it
    needs_artifact: bool = False  # runs only the files `edgeinfer convert --engine NAME` writes, never the .onnx
    providers: bool = False  # runs on the device profile's execution providers (tune tries each one available)


ENGINES: dict[str, Engine] = {
    "onnxruntime": Engine("edgeinfer.engines.onnxruntime", "onnxruntime", "pip install onnxruntime", providers=True),
    "openvino": Engine("edgeinfer.engines.openvino", "openvino", "pip install 'edgeinfer[openvino]'"),
    "ncnn": Engine("edgeinfer.engines.ncnn", "ncnn", "pip install 'edgeinfer[ncnn]'", needs_artifact=True),
    "litert": Engine("edgeinfer.engines.litert", "ai_edge_litert", "pip install 'edgeinfer[litert]'",
                     needs_artifact=True),
}
DEFAULT = "onnxruntime"
AUTO = "auto"  # the device profile's engines, in order: the first one that can run the model here


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


def choose(profile: Any, model: str | os.PathLike, *, strict: bool = False) -> str:
    """The engine ``engine="auto"`` runs ``model`` on when tune chose none for it here
    (:mod:`edgeinfer.engines.choice`, read by ``load`` first): the first of ``profile.engines`` that is installed
    here and can read the model (an engine that runs only converted files needs them beside it). Each one skipped
    is said with an :class:`EngineFallbackWarning`; with ``strict`` the first skip raises instead."""
    from edgeinfer.engines import base

    skipped = []
    for name in profile.engines:
        row = entry(name)
        if not installed(name):
            why = f"not installed here ({row.install})"
        elif row.needs_artifact and not base.artifact_dir(model, name).is_dir():
            why = (f"no {name} files beside the model (make them on the workstation: edgeinfer convert {model} "
                   f"--engine {name})")
        else:
            if skipped:
                warnings.warn(f"device {profile.name!r}: engine {name!r} runs {model}; skipped " + "; ".join(skipped)
                              + ".", EngineFallbackWarning, stacklevel=3)
            return name
        if strict:
            raise DependencyError(f"device {profile.name!r} prefers engine {name!r}, which is {why}. (strict=True "
                                  "refuses to fall back.)")
        skipped.append(f"{name!r}: {why}")
    raise DependencyError(f"device {profile.name!r}: none of its engines {list(profile.engines)} can run {model}: "
                          + "; ".join(skipped) + ".")
