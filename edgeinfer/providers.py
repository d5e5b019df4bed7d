"""Choosing ONNX Runtime execution providers for a device, and reporting what was actually used."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import onnxruntime as ort

from edgeinfer.errors import ModelError

# device name -> providers in order of preference. Device profiles as data files extend this.
DEVICES: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
}


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
    if device not in DEVICES:
        raise ModelError(f"device: expected one of {sorted(DEVICES)}, found {device!r}.")
    choice = ProviderChoice(device, DEVICES[device], tuple(ort.get_available_providers()))
    if not choice.usable:
        raise ModelError(f"device {device!r}: none of its providers {list(choice.requested)} is in this ONNX "
                         f"Runtime build (available: {list(choice.available)}). Install the matching "
                         "onnxruntime package.")
    if choice.usable[0] != choice.requested[0]:
        warnings.warn(f"device {device!r}: {choice.requested[0]} is not available in this ONNX Runtime build; "
                      f"running on {choice.usable[0]}.", ProviderFallbackWarning, stacklevel=3)
    return choice
