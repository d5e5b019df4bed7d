"""ONNX Runtime: the default engine, with the device profile's execution providers."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from edgeinfer import providers
from edgeinfer.errors import ModelError

NAME = "onnxruntime"


def version() -> str:
    return ort.__version__


class OrtSession:
    """An ``onnxruntime.InferenceSession`` with the engine surface; the rest of its API passes through
    (``get_provider_options``, ``get_modelmeta``, ...). ``run`` is safe to call from several threads."""

    engine = NAME
    artifact = None

    def __init__(self, session: ort.InferenceSession, requested: Sequence[str] = ()) -> None:
        self.inference_session = session
        self.requested = tuple(requested)  # the providers the profile asked for, in order
        self.version = ort.__version__
        self.metadata: Mapping[str, str] = dict(session.get_modelmeta().custom_metadata_map)

    def get_inputs(self) -> Sequence[Any]:
        return self.inference_session.get_inputs()

    def get_outputs(self) -> Sequence[Any]:
        return self.inference_session.get_outputs()

    def get_providers(self) -> list[str]:
        return self.inference_session.get_providers()

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.inference_session.run(None if names is None else list(names), feed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inference_session, name)


def open(path: str | os.PathLike, *, profile: providers.Profile, threads: int | None = None, strict: bool = False,
         session_config: Mapping[str, str] | None = None) -> OrtSession:
    """A session on the profile's providers (a missing preferred one falls back with a warning, or raises when
    ``strict``) with its session settings; ``threads`` overrides its intra-op threads."""
    choice = providers.choose(profile, strict=strict)
    opts = profile.session_options(threads=threads)
    for key, value in (session_config or {}).items():
        opts.add_session_config_entry(str(key), str(value))
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=choice.session_providers())
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
        raise ModelError(f"{path}: expected an ONNX model ONNX Runtime can load, it failed: {exc}") from exc
    providers.check_session(session, choice, strict=strict)
    return OrtSession(session, choice.requested)
