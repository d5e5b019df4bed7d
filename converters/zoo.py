"""Building a named architecture and its standard eval transform, for ``edgeinfer export``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from edgeinfer.errors import ExportError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_eval_transform(resize: int = 256, crop: int = 224) -> Any:
    """torchvision's standard ImageNet eval transform: Resize(256), CenterCrop(224), ToTensor, Normalize."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class _ImageNetEval:
    """The standard ImageNet eval transform, importable as ``converters.zoo:IMAGENET_EVAL`` (built on use)."""

    def __call__(self, img: Any) -> Any:
        if not hasattr(self, "_tf"):
            self._tf = imagenet_eval_transform()
        return self._tf(img)


IMAGENET_EVAL = _ImageNetEval()


def import_attr(spec: str) -> Any:
    """The object named by ``module:attribute`` (dots allowed in the attribute)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ExportError(f"expected 'module:attribute', found {spec!r}.")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def build(arch: str, *, num_classes: int | None = None, weights: str | Path | None = None) -> tuple[Any, Any]:
    """Return ``(model, eval_transform)`` for a torchvision name, ``timm:NAME`` or ``module:attribute``."""
    import torch

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if arch.startswith("timm:"):
        import timm
        from timm.data import create_transform, resolve_data_config

        model = timm.create_model(arch[5:], pretrained=False, **kwargs)
        transform = create_transform(**resolve_data_config(model=model), is_training=False)
    elif ":" in arch:
        obj = import_attr(arch)
        model = obj if isinstance(obj, torch.nn.Module) else obj(**kwargs)
        transform = imagenet_eval_transform()
    else:
        import torchvision

        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise ExportError(f"architecture: expected a torchvision classification model name, found {arch!r}. "
                              "Use timm:NAME for timm, or module:attribute for your own model.")
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
        transform = imagenet_eval_transform()
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"{arch}: expected a torch.nn.Module, found {type(model).__name__}.")
    if weights is not None:
        # weights_only=True: a weights file is data, never code to unpickle.
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model, transform
