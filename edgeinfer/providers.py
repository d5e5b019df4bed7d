"""Choosing ONNX Runtime execution providers for a device, and reporting what was actually used."""

from __future__ import annotations

import os
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from edgeinfer.errors import ModelError

# Device profiles are data: one TOML file per device in the project's devices/ folder, or a path.
DEVICES_DIR = Path(os.environ.get("EDGEINFER_DEVICES", Path(__file__).resolve().parent.parent / "devices"))
PROFILE_KEYS = {"name", "description", "providers"}


def device_names() -> list[str]:
    return sorted(p.stem for p in DEVICES_DIR.glob("*.toml"))


def read_profile(device: str) -> tuple[str, ...]:
    """The providers, in order of preference, of a device name or a profile file path."""
    path = Path(device) if device.endswith(".toml") else DEVICES_DIR / f"{device}.toml"
    if not path.is_file():
        raise ModelError(f"device: expected one of {device_names()} (files in {DEVICES_DIR}) or a .toml "
                         f"profile path, found {device!r}. Add a profile file to define a new device.")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: expected a TOML device profile, found an unreadable file ({exc}).") from exc
    unknown = sorted(set(data) - PROFILE_KEYS)
    if unknown:
        raise ModelError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(PROFILE_KEYS)}.")
    provs = data.get("providers")
    if not (isinstance(provs, list) and provs and all(isinstance(p, str) for p in provs)):
        raise ModelError(f"{path}: 'providers' must be a non-empty list of ONNX Runtime provider names, "
                         f"found {provs!r}.")
    return tuple(provs)


class ProviderFallbackWarning(UserWarning):
    """A preferred execution provider is not available and a later one runs instead."""


@dataclass(frozen=True)
class ProviderChoice:
    device: str
    requested: tuple[str, ...]
    available: tuple[str, ...]

    @property
    def usable(self) -> list[str]:
        return [p for p in self.requested if p in self.available]


def choose(device: str) -> ProviderChoice:
    """Resolve a device name to the providers to request, warning when a preferred one is missing."""
    choice = ProviderChoice(device, read_profile(device), tuple(ort.get_available_providers()))
    if not choice.usable:
        raise ModelError(f"device {device!r}: none of its providers {list(choice.requested)} is in this ONNX "
                         f"Runtime build (available: {list(choice.available)}). Install the matching "
                         "onnxruntime package.")
    if choice.usable[0] != choice.requested[0]:
        warnings.warn(f"device {device!r}: {choice.requested[0]} is not available in this ONNX Runtime build; "
                      f"running on {choice.usable[0]}.", ProviderFallbackWarning, stacklevel=3)
    return choice
