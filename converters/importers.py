"""The torch-side spec sources: a torchvision/timm transform object, or a timm model's pretrained config.

These need torch (the transform is run on probe images to prove the spec reproduces it), so they live on
the workstation; :mod:`edgeinfer.importers` hands them here and reads every data-only source itself.
"""

from __future__ import annotations

from typing import Any

from converters.transforms import spec_from_transform
from edgeinfer.errors import ConversionError
from edgeinfer.importers import Preprocessing


def timm_transform(name: str) -> Any:
    """The eval transform of a timm model's pretrained config (``resnet50.a1_in1k``), without building it."""
    import timm
    from timm.data import create_transform, resolve_data_config

    try:
        cfg = timm.get_pretrained_cfg(name)
    except (RuntimeError, ValueError) as exc:
        cfg, error = None, exc
    else:
        error = None
    if cfg is None:
        raise ConversionError(f"timm:{name}: expected a timm model name with a pretrained config (e.g. "
                              f"'resnet50.a1_in1k'), found none{f' ({error})' if error else ''}. "
                              "List them with timm.list_pretrained().")
    data = resolve_data_config(pretrained_cfg=cfg.to_dict())
    return create_transform(**data, is_training=False)


def preprocessing_from_torch(source: Any, *, loader_color: str = "rgb") -> Preprocessing:
    """A transform object, or ``"timm:NAME"``, as a :class:`Preprocessing` proven on probe images."""
    provenance = {"source": "transform"}
    if isinstance(source, str):
        if not source.startswith("timm:"):
            raise ConversionError(f"spec source {source!r}: expected 'timm:MODEL_NAME', a file or a transform.")
        provenance = {"source": "timm", "timm_model": source[5:]}
        source = timm_transform(source[5:])
    if not callable(source):
        raise ConversionError(f"spec source: expected a spec, a dict, a JSON file, 'timm:NAME' or a transform, "
                              f"found {type(source).__name__}.")
    spec = spec_from_transform(source, loader_color=loader_color, provenance=provenance)
    return Preprocessing(steps=spec.steps, decode=spec.decode, provenance=spec.provenance)
