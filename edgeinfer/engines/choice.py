"""What ``tune`` chose for a model on a device: ``MODEL.tune.json`` beside the model, read by ``engine="auto"``.

``edgeinfer tune`` (:mod:`converters.tune`) measures engine x precision x threads on the device itself, keeps only
the configurations within the task's gate against ONNX Runtime at fp32, and writes the fastest of them here, with
the variant or engine files it needs beside the model. ``load(engine="auto")`` runs that choice when it was made for
the device profile being loaded and for the spec the model carries now; otherwise an
:class:`~edgeinfer.engines.EngineFallbackWarning` says why it was ignored (``strict`` raises) and the profile's
engines are taken in order, as without a choice. The runtime owns this format because the runtime reads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edgeinfer.errors import ModelError

SCHEMA = "edgeinfer.tune-choice/1"


@dataclass(frozen=True)
class Choice:
    """One configuration tune measured as the fastest within the gate, and what it was measured for."""

    engine: str  # a name in edgeinfer.engines.ENGINES
    engine_version: str
    precision: str  # "fp32", or the variant file beside the model it runs (model.fp16.onnx, ...)
    provider: str  # the execution provider it ran on (for engines without providers: what their session reports)
    threads: int
    median_ms: float
    spec_sha256: str  # edgeinfer.engines.base.spec_hash of the spec the model file carried when it was measured
    device: str  # the device profile tune started from
    profile: str | None  # the tuned profile tune wrote beside it (loading with it is the same device)
    model: str  # the .onnx file's name
    rows: tuple[Mapping[str, Any], ...] = ()  # every configuration measured: engine, precision, provider, threads,
    # median_ms, passes

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "rows": [dict(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "Choice":
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise ModelError(f"{where}: expected a tune choice with schema {SCHEMA!r}, found {found!r}. Re-run "
                             "edgeinfer tune on this device.")
        names = [f.name for f in dataclasses.fields(cls)]
        try:
            return cls(**{**{k: data[k] for k in names if k != "rows"}, "rows": tuple(data.get("rows", ()))})
        except KeyError as exc:
            raise ModelError(f"{where}: a tune choice without its {exc} field. Re-run edgeinfer tune on this "
                             "device.") from exc


def path_for(model: str | os.PathLike) -> Path:
    """Where tune's choice for ``model.onnx`` lives: ``model.tune.json`` beside it."""
    p = Path(model)
    return p.with_name(f"{p.stem}.tune.json")


def _refuse(message: str, strict: bool) -> None:
    from edgeinfer.engines import EngineFallbackWarning

    if strict:
        raise ModelError(message + " (strict=True refuses to fall back.)")
    # warn <- _refuse <- read/check <- load <- the caller of load
    warnings.warn(message, EngineFallbackWarning, stacklevel=4)


def read(model: str | os.PathLike, profile: Any, *, strict: bool = False) -> Choice | None:
    """Tune's choice for ``model`` when there is one this device can run as written: made for ``profile``, its
    engine installed, its variant or engine files present. None when there is none; a choice that does not fit is
    said with an EngineFallbackWarning (``strict``: a ModelError) and None is returned."""
    from edgeinfer import engines
    from edgeinfer.engines import base

    f = path_for(model)
    if not f.is_file():
        return None
    try:
        choice = Choice.from_dict(json.loads(f.read_text()), str(f))
    except (OSError, ValueError, ModelError) as exc:
        _refuse(f"{f}: tune's choice is not readable ({exc}); ignored, the device profile's engines run.", strict)
        return None
    why = None
    if profile.name not in (choice.device, choice.profile):
        why = f"it was made for device {choice.device!r}, not {profile.name!r}"
    elif choice.engine not in engines.ENGINES:
        why = f"its engine {choice.engine!r} is not one this edgeinfer has ({list(engines.ENGINES)})"
    elif not engines.installed(choice.engine):
        why = f"its engine {choice.engine!r} is not installed here ({engines.ENGINES[choice.engine].install})"
    elif engines.ENGINES[choice.engine].needs_artifact and not base.artifact_dir(model, choice.engine).is_dir():
        why = f"the {choice.engine} files it runs are missing ({base.artifact_dir(model, choice.engine)})"
    elif not base.variant_path(model, choice.precision).is_file():
        why = f"the {choice.precision} variant it runs is missing ({base.variant_path(model, choice.precision)})"
    if why:
        _refuse(f"{f}: tune's choice ({choice.engine}, {choice.precision}, {choice.threads} threads) is ignored: "
                f"{why}. The device profile's engines run; re-run edgeinfer tune {model} --device {profile.name} "
                "to choose again.", strict)
        return None
    return choice


def profile_for(choice: Choice, profile: Any) -> Any:
    """``profile`` with the choice's precision, threads and provider (first, the others kept behind it)."""
    chosen = tuple(p for p in profile.providers if p.name == choice.provider)
    rest = tuple(p for p in profile.providers if p.name != choice.provider)
    return dataclasses.replace(profile, precision=choice.precision, intra_op_threads=choice.threads,
                               providers=chosen + rest)


def check(choice: Choice, spec_sha256: str | None, model: str | os.PathLike, *, strict: bool = False) -> bool:
    """Whether the model still carries the spec the choice was measured for; when not, says so (EngineFallbackWarning,
    ``strict``: ModelError) and returns False: timings of another spec (another size, other steps) decide nothing."""
    if spec_sha256 == choice.spec_sha256:
        return True
    _refuse(f"{path_for(model)}: tune's choice was measured for the spec with hash {choice.spec_sha256[:12]}…; the "
            f"model's spec hashes to {str(spec_sha256)[:12]}… (the model changed after tune). Ignored: the device "
            f"profile's engines run; re-run edgeinfer tune {model} to choose again.", strict)
    return False
