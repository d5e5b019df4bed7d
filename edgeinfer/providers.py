"""Device profiles and ONNX Runtime execution providers: what was asked for, and what actually runs.

A profile is data, one TOML file per device in the project's ``devices/`` folder (or any path)::

    name = "raspberry-pi-5"
    description = "Raspberry Pi 5, Cortex-A76 x4"
    precision = "fp32"                 # the model variant to prefer: fp32 | fp16 | int8
    preprocess = "exact"               # exact | fast
    [session]
    intra_op_threads = 4               # 0 = ONNX Runtime's default
    inter_op_threads = 1
    graph_optimization = "all"         # disable | basic | extended | all
    execution_mode = "sequential"      # sequential | parallel
    [[providers]]                      # in order of preference
    name = "XnnpackExecutionProvider"
    options = { intra_op_num_threads = "4" }
    [[providers]]
    name = "CPUExecutionProvider"

Provider names are ONNX Runtime's own (``onnxruntime.get_all_providers()``); options are passed to
ONNX Runtime unchanged, as strings, as its documentation lists them per provider.
"""

from __future__ import annotations

import os
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import onnxruntime as ort

from edgeinfer.errors import ModelError, ProviderError


def _devices_dir() -> Path:
    """Where the profiles are: ``$EDGEINFER_DEVICES``, the copy an installed wheel carries, or the checkout's."""
    if "EDGEINFER_DEVICES" in os.environ:
        return Path(os.environ["EDGEINFER_DEVICES"])
    package = Path(__file__).resolve().parent
    # pyproject.toml packages the repository's devices/ as edgeinfer/devices; a source checkout (and an
    # editable install of it) has only the repository's folder.
    installed = package / "devices"
    return installed if installed.is_dir() else package.parent / "devices"


DEVICES_DIR = _devices_dir()
PRECISIONS = ("fp32", "fp16", "int8")
PREPROCESS_MODES = ("exact", "fast")
GRAPH_OPTIMIZATION = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                      "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                      "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                      "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
EXECUTION_MODES = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}
TOP_KEYS = {"name", "description", "precision", "preprocess", "session", "providers", "engines"}
SESSION_KEYS = {"intra_op_threads", "inter_op_threads", "graph_optimization", "execution_mode", "config"}
PROVIDER_KEYS = {"name", "options"}


class ProviderFallbackWarning(UserWarning):
    """A preferred execution provider is not available and a later one runs instead."""


@dataclass(frozen=True)
class ProviderRequest:
    name: str
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """A device: providers in order of preference with options, session settings, precision, preprocessing."""

    name: str
    providers: tuple[ProviderRequest, ...]
    description: str = ""
    precision: str = "fp32"
    preprocess: str = "exact"
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    config: Mapping[str, str] = field(default_factory=dict)
    path: str = ""
    # the engines engine="auto" tries, in order (edgeinfer.engines.choose): the first installed one that can read
    # the model is used, each one skipped is said with an EngineFallbackWarning
    engines: tuple[str, ...] = ("onnxruntime",)

    def session_options(self, *, threads: int | None = None) -> ort.SessionOptions:
        opts = ort.SessionOptions()
        intra = self.intra_op_threads if threads is None else threads
        if intra:
            opts.intra_op_num_threads = int(intra)
        if self.inter_op_threads:
            opts.inter_op_num_threads = int(self.inter_op_threads)
        opts.graph_optimization_level = GRAPH_OPTIMIZATION[self.graph_optimization]
        opts.execution_mode = EXECUTION_MODES[self.execution_mode]
        opts.log_severity_level = 3
        for key, value in self.config.items():
            opts.add_session_config_entry(str(key), str(value))
        return opts

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "precision": self.precision,
                "preprocess": self.preprocess, "path": self.path, "engines": list(self.engines),
                "session": {"intra_op_threads": self.intra_op_threads, "inter_op_threads": self.inter_op_threads,
                            "graph_optimization": self.graph_optimization, "execution_mode": self.execution_mode,
                            "config": dict(self.config)},
                "providers": [{"name": p.name, "options": dict(p.options)} for p in self.providers]}


def device_names() -> list[str]:
    return sorted(p.stem for p in DEVICES_DIR.glob("*.toml"))


def _bad(path: Path, key: str, expected: str, found: Any) -> ModelError:
    return ModelError(f"{path}: '{key}' must be {expected}, found {found!r}. Fix the device profile.")


def _unknown(path: Path, where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ModelError(f"{path}: unknown key(s) {extra} in {where}; allowed: {sorted(allowed)}.")


def parse_profile(data: Mapping[str, Any], path: Path) -> Profile:
    """Validate a profile's data and return it; every error names the key."""
    _unknown(path, "the profile", data, TOP_KEYS)
    session = data.get("session", {})
    if not isinstance(session, Mapping):
        raise _bad(path, "session", "a table", session)
    _unknown(path, "[session]", session, SESSION_KEYS)
    known = set(ort.get_all_providers())
    providers = data.get("providers")
    if not (isinstance(providers, list) and providers):
        raise _bad(path, "providers", "a non-empty array of [[providers]] tables", providers)
    requests = []
    for i, p in enumerate(providers):
        if not isinstance(p, Mapping) or "name" not in p:
            raise _bad(path, f"providers[{i}]", "a table with a 'name'", p)
        _unknown(path, f"providers[{i}]", p, PROVIDER_KEYS)
        if p["name"] not in known:
            raise _bad(path, f"providers[{i}].name", f"an ONNX Runtime provider name ({sorted(known)})", p["name"])
        options = p.get("options", {})
        if not isinstance(options, Mapping):
            raise _bad(path, f"providers[{i}].options", "a table", options)
        requests.append(ProviderRequest(p["name"], {str(k): str(v) for k, v in options.items()}))
    for key, choices in (("precision", PRECISIONS), ("preprocess", PREPROCESS_MODES)):
        if data.get(key, choices[0]) not in choices:
            raise _bad(path, key, f"one of {list(choices)}", data.get(key))
    for key, choices in (("graph_optimization", GRAPH_OPTIMIZATION), ("execution_mode", EXECUTION_MODES)):
        if key in session and session[key] not in choices:
            raise _bad(path, f"session.{key}", f"one of {list(choices)}", session[key])
    for key in ("intra_op_threads", "inter_op_threads"):
        v = session.get(key, 0)
        if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1024):
            raise _bad(path, f"session.{key}", "an int from 0 (ONNX Runtime's default) to 1024", v)
    config = session.get("config", {})
    if not isinstance(config, Mapping):
        raise _bad(path, "session.config", "a table of ONNX Runtime session config entries", config)
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise _bad(path, key, "a string", data[key])
    engines = data.get("engines", ["onnxruntime"])
    if not (isinstance(engines, list) and engines and all(isinstance(e, str) and e for e in engines)):
        raise _bad(path, "engines", "a non-empty array of engine names, in order of preference", engines)
    return Profile(name=str(data.get("name", path.stem)), providers=tuple(requests),
                   description=str(data.get("description", "")), precision=data.get("precision", "fp32"),
                   preprocess=data.get("preprocess", "exact"),
                   intra_op_threads=session.get("intra_op_threads", 0), inter_op_threads=session.get("inter_op_threads", 0),
                   graph_optimization=session.get("graph_optimization", "all"),
                   execution_mode=session.get("execution_mode", "sequential"),
                   config={str(k): str(v) for k, v in config.items()}, path=str(path), engines=tuple(engines))


def read_profile(device: str | os.PathLike) -> Profile:
    """The profile of a device name (a file in ``devices/``) or of a path to a .toml file."""
    text = str(device)
    path = Path(text) if text.endswith(".toml") else DEVICES_DIR / f"{text}.toml"
    if not path.is_file():
        raise ModelError(f"device: expected one of {device_names()} (files in {DEVICES_DIR}) or a .toml "
                         f"profile path, found {text!r}. Add a profile file to define a new device.")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: expected a TOML device profile, found an unreadable file ({exc}).") from exc
    return parse_profile(data, path)


@dataclass(frozen=True)
class ProviderChoice:
    """The providers a profile asks for, those this ONNX Runtime build offers, and those to request."""

    profile: Profile
    available: tuple[str, ...]

    @property
    def requested(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profile.providers)

    @property
    def usable(self) -> list[ProviderRequest]:
        return [p for p in self.profile.providers if p.name in self.available]

    def session_providers(self) -> list[tuple[str, dict[str, str]]]:
        return [(p.name, dict(p.options)) for p in self.usable]


def choose(profile: Profile, *, strict: bool = False) -> ProviderChoice:
    """Match a profile against this ONNX Runtime build; warn (or raise when ``strict``) on a fallback."""
    choice = ProviderChoice(profile, tuple(ort.get_available_providers()))
    if not choice.usable:
        raise ProviderError(f"device {profile.name!r}: none of its providers {list(choice.requested)} is in this "
                            f"ONNX Runtime build (available: {list(choice.available)}). Install the matching "
                            "onnxruntime package (see README, 'Devices').")
    if choice.usable[0].name != choice.requested[0]:
        missing = [n for n in choice.requested if n not in choice.available]
        report_fallback(profile.name, asked=missing, runs=choice.usable[0].name, strict=strict,
                        why="not in this ONNX Runtime build")
    return choice


def report_fallback(device: str, *, asked: list[str], runs: str, strict: bool, why: str) -> None:
    msg = (f"device {device!r}: {', '.join(asked)} {why}; running on {runs}. Install the onnxruntime build with "
           f"{asked[0]}, or choose another device profile.")
    if strict:
        raise ProviderError(msg + " (strict=True)")
    # report_fallback <- choose/check_session <- engines.onnxruntime.open <- load <- the caller of load
    warnings.warn(msg, ProviderFallbackWarning, stacklevel=5)


def check_session(session: ort.InferenceSession, choice: ProviderChoice, *, strict: bool) -> None:
    """ONNX Runtime silently drops a provider that fails to initialise: report it when it happened."""
    used = session.get_providers()
    wanted = [p.name for p in choice.usable]
    dropped = [p for p in wanted if p not in used]
    if dropped:
        report_fallback(choice.profile.name, asked=dropped, runs=used[0] if used else "nothing", strict=strict,
                        why="failed to initialise in ONNX Runtime")
