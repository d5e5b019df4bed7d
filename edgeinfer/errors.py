"""Typed errors. One base class; one subclass per kind of failure a user would handle differently.

Every message says what was expected, what was found, and what to do about it.
"""

from __future__ import annotations


class EdgeInferError(Exception):
    """Base class of every error edgeinfer raises on purpose."""


class DependencyError(EdgeInferError, ImportError):
    """A runtime dependency (OpenCV, ONNX Runtime, an engine's package) is missing or too old on this machine."""


class SpecError(EdgeInferError, ValueError):
    """A preprocessing spec is malformed or asks for semantics the runtime does not implement."""


class SchemaVersionError(SpecError):
    """A spec was written for a schema version this runtime does not read."""


class SpecMissingError(EdgeInferError):
    """A model file carries no edgeinfer spec in its metadata."""


class ImageError(EdgeInferError, ValueError):
    """An input image cannot be used: wrong shape, dtype or channel count, empty, or undecodable."""


class ModelError(EdgeInferError):
    """A model file cannot be loaded, or disagrees with its own spec."""


class ProviderError(ModelError):
    """A device's execution providers cannot run here (or would fall back, with ``strict=True``)."""


class ConversionError(EdgeInferError, ValueError):
    """A training transform cannot be expressed as a spec without changing its pixels."""


class RandomTransformError(ConversionError):
    """A random augmentation was found in a transform meant for inference."""


class ExportError(EdgeInferError):
    """Exporting a model to ONNX failed, or the exported model does not match the original."""
