"""Reading a user's real eval transform (torchvision v1/v2, timm) into an edgeinfer spec.

The transform is walked step by step while tracking what the data is at each point (a PIL image, a
uint8 tensor, a float tensor), because the same ``Resize`` means different pixels on PIL images and on
tensors. Anything whose pixels we cannot reproduce is refused by name, never approximated. The spec is
then checked against the transform itself on probe images before it is returned.
"""

from __future__ import annotations

import numbers
from types import SimpleNamespace
from typing import Any, Iterable

import numpy as np

from edgeinfer.pipeline import ops
from edgeinfer.errors import ConversionError, RandomTransformError
from edgeinfer.spec import SCHEMA, Decode, InputSpec, OutputSpec, Spec, Step

# Transforms that draw random numbers at call time. Matched by class name so that torchvision v1, v2
# and timm variants are all caught without importing each.
RANDOM_NAMES = {
    "ColorJitter", "RandAugment", "AutoAugment", "TrivialAugmentWide", "AugMix", "GaussianBlur",
    "ElasticTransform", "ScaleJitter", "RandomShortestSize", "RandomIoUCrop", "RandomZoomOut", "MixUp", "CutMix",
    "RandomResizedCropAndInterpolation", "RandomErasing", "GaussianNoise", "JPEG", "RandomChoice", "RandomApply",
    "RandomOrder",
}

_TV_INTERP = {"nearest": "nearest", "nearest-exact": "nearest_exact", "bilinear": "bilinear",
              "bicubic": "bicubic", "box": "box", "hamming": "hamming", "lanczos": "lanczos"}
_PIL_CODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _pil_pass_order() -> str:
    import PIL

    major = int(PIL.__version__.split(".")[0])
    return "pillow13" if major >= 13 else "horizontal_first"


def _uint8_arithmetic(t: Any, interpolation: str) -> str:
    """How this torchvision resizes uint8 tensors on the machine doing the conversion (the training one)."""
    if interpolation in ("nearest", "nearest_exact"):
        return "native"
    if type(t).__module__.startswith("torchvision.transforms.v2"):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2.functional import _geometry

        mode = InterpolationMode(interpolation.replace("_", "-"))
        return "native" if _geometry._do_native_uint8_resize_on_cpu(mode) else "float_round"
    return "float_round"  # torchvision v1 casts uint8 tensors to float, interpolates and rounds


def _interp(t: Any, value: Any, backend: str) -> str:
    if isinstance(value, str):
        name = _TV_INTERP.get(value.lower().replace("_", "-"))
    elif hasattr(value, "value") and isinstance(value.value, str):  # torchvision InterpolationMode
        name = _TV_INTERP.get(value.value)
    elif isinstance(value, int):
        name = _PIL_CODES.get(value)
    else:
        name = None
    if name is None:
        raise ConversionError(f"{type(t).__name__}: interpolation {value!r} is not one edgeinfer reproduces; "
                              f"use one of {sorted(set(_TV_INTERP.values()))}.")
    if backend == "pil" and name == "nearest_exact":
        name = "nearest"  # torchvision maps NEAREST_EXACT to PIL's NEAREST on PIL images
    if name not in ops.BACKENDS[backend]:
        raise ConversionError(f"{type(t).__name__}: interpolation {name!r} on {backend} data is not supported "
                              f"by torchvision itself; use one of {ops.BACKENDS[backend]}.")
    return name


def _hw(t: Any, size: Any) -> list[int]:
    if isinstance(size, numbers.Integral):
        return [int(size), int(size)]
    size = list(size)
    if len(size) == 1:
        return [int(size[0]), int(size[0])]
    if len(size) == 2:
        return [int(size[0]), int(size[1])]
    raise ConversionError(f"{type(t).__name__}: size {size!r} is not an int or (height, width).")


def _fill(t: Any, fill: Any) -> Any:
    if fill is None:
        return 0
    if isinstance(fill, dict):
        raise ConversionError(f"{type(t).__name__}: a per-type fill dict is not supported; give one fill value.")
    if isinstance(fill, numbers.Number):
        return float(fill) if isinstance(fill, float) and not float(fill).is_integer() else int(fill)
    return [float(v) for v in fill]


class _Walk:
    """State while walking a transform: the steps so far and what the data is."""

    def __init__(self, loader_color: str) -> None:
        self.steps: list[Step] = []
        self.domain = "pil"  # "pil" | "uint8" (tensor) | "float" (tensor)
        self.channels = 3 if loader_color == "rgb" else 1

    @property
    def backend(self) -> str:
        return "pil" if self.domain == "pil" else "torch"

    def add(self, op: str, **params: Any) -> None:
        self.steps.append(Step(op, params))

    def to_float(self, scale: str) -> None:
        if self.domain != "float":  # float -> float conversions change nothing
            self.add("to_float", scale=scale)
            self.domain = "float"

    def visit(self, t: Any) -> None:
        name = type(t).__name__
        module = type(t).__module__
        if name in ("Compose",) and hasattr(t, "transforms"):
            for sub in t.transforms:
                self.visit(sub)
            return
        if name.startswith("Random") or name in RANDOM_NAMES:
            raise RandomTransformError(
                f"{name} is a random augmentation ({module}); an inference transform must be deterministic. "
                "Pass the eval transform (for timm: create_transform(**resolve_data_config(model=m)), "
                "is_training=False).")
        handler = getattr(self, "_" + name, None)
        if handler is None:
            raise ConversionError(
                f"{name} ({module}) is not a transform edgeinfer can reproduce. Supported: Compose, Resize, "
                "CenterCrop, Pad, Grayscale, ToTensor, PILToTensor, ConvertImageDtype, Normalize, ToImage, "
                "ToDtype, ToPureTensor, torchvision's ImageClassification and SemanticSegmentation presets, and timm's ResizeKeepRatio, CenterCropOrPad, MaybeToTensor, "
                "MaybePILToTensor. Remove or replace it in the eval transform.")
        handler(t)

    # -- torchvision (v1 and v2 share names) -------------------------------------------------------
    def _Resize(self, t: Any) -> None:
        size, max_size = t.size, getattr(t, "max_size", None)
        backend = self.backend
        params: dict[str, Any] = {"interpolation": _interp(t, t.interpolation, backend), "backend": backend}
        if size is None:
            params.update(rule="longer", size=int(max_size))
        elif isinstance(size, numbers.Integral) or len(size) == 1:
            s = int(size) if isinstance(size, numbers.Integral) else int(size[0])
            params.update(rule="shorter", size=s, max_size=int(max_size) if max_size is not None else None)
        else:
            params.update(rule="exact", size=[int(size[0]), int(size[1])])
        if backend == "torch":
            aa = getattr(t, "antialias", True)
            params["antialias"] = bool(aa) if aa is not None else False
            if self.domain == "uint8":
                params["uint8_arithmetic"] = _uint8_arithmetic(t, params["interpolation"])
        else:
            params["pass_order"] = _pil_pass_order()
        self.add("resize", **params)

    def _CenterCrop(self, t: Any) -> None:
        self.add("center_crop", size=_hw(t, t.size), fill=0)

    def _Pad(self, t: Any) -> None:
        p = t.padding
        p = [p] if isinstance(p, numbers.Integral) else list(p)
        if len(p) == 1:
            p = p * 4
        elif len(p) == 2:
            p = [p[0], p[1], p[0], p[1]]
        if len(p) != 4:
            raise ConversionError(f"Pad: padding {t.padding!r} must have 1, 2 or 4 values.")
        self.add("pad", padding=[int(v) for v in p], fill=_fill(t, t.fill), mode=str(t.padding_mode))

    def _Grayscale(self, t: Any) -> None:
        self.add("grayscale", channels=int(t.num_output_channels), backend=self.backend)
        self.channels = int(t.num_output_channels)

    def _ToTensor(self, t: Any) -> None:
        if type(t).__module__.startswith("timm"):
            self.to_float("none")  # timm's ToTensor keeps 0-255
        else:
            self.to_float("div255")

    def _PILToTensor(self, t: Any) -> None:
        if self.domain == "pil":
            self.domain = "uint8"

    _ToImage = _PILToTensor
    _MaybePILToTensor = _PILToTensor

    def _ToPureTensor(self, t: Any) -> None:
        if self.domain == "pil":
            raise ConversionError("ToPureTensor received a PIL image; put ToImage before it.")

    def _ConvertImageDtype(self, t: Any) -> None:
        self._to_dtype(t, t.dtype, scale=True, method="div255")

    def _ToDtype(self, t: Any) -> None:
        dtype = t.dtype
        if isinstance(dtype, dict):
            values = {v for v in dtype.values() if v is not None}
            if len(values) != 1:
                raise ConversionError(f"ToDtype: per-type dtypes {dtype!r} are not supported; give one dtype.")
            dtype = values.pop()
        self._to_dtype(t, dtype, scale=bool(t.scale), method="mul_inv255")

    def _to_dtype(self, t: Any, dtype: Any, *, scale: bool, method: str) -> None:
        import torch

        if dtype == torch.uint8 and self.domain in ("pil", "uint8"):
            return
        if dtype != torch.float32:
            raise ConversionError(f"{type(t).__name__}: dtype {dtype} is not supported; models take float32 "
                                  "input. Convert with torch.float32.")
        if self.domain == "pil":
            raise ConversionError(f"{type(t).__name__} received a PIL image; put ToImage/PILToTensor before it.")
        self.to_float(method if scale else "none")

    def _Normalize(self, t: Any) -> None:
        if self.domain != "float":
            raise ConversionError("Normalize comes before the conversion to float; put ToTensor/ToDtype first.")
        mean = np.asarray(t.mean, dtype=np.float64).reshape(-1).tolist()
        std = np.asarray(t.std, dtype=np.float64).reshape(-1).tolist()
        self.add("normalize", mean=mean, std=std)

    # -- torchvision's weight presets (transforms._presets): what `weights.transforms()` returns --------
    def _preset_resize(self, t: Any) -> None:
        if t.resize_size is not None:
            self._Resize(SimpleNamespace(size=list(t.resize_size), max_size=None, interpolation=t.interpolation,
                                         antialias=t.antialias))

    def _preset_tail(self, t: Any) -> None:
        if self.domain == "pil":
            self.domain = "uint8"  # F.pil_to_tensor
        self.to_float("div255")  # F.convert_image_dtype(img, torch.float)
        self._Normalize(t)

    def _ImageClassification(self, t: Any) -> None:
        self._preset_resize(t)
        self.add("center_crop", size=_hw(t, t.crop_size), fill=0)
        self._preset_tail(t)

    def _SemanticSegmentation(self, t: Any) -> None:
        self._preset_resize(t)  # the shorter side, no crop: the input size follows the image
        self._preset_tail(t)

    # -- timm --------------------------------------------------------------------------------------
    def _MaybeToTensor(self, t: Any) -> None:
        self.to_float("div255")

    def _ResizeKeepRatio(self, t: Any) -> None:
        if getattr(t, "random_scale_prob", 0) > 0 or getattr(t, "random_aspect_prob", 0) > 0:
            raise RandomTransformError("ResizeKeepRatio has random_scale_prob/random_aspect_prob > 0: it is a "
                                       "random augmentation. Pass the eval transform.")
        if isinstance(t.interpolation, (tuple, list)):
            raise RandomTransformError("ResizeKeepRatio picks a random interpolation; pass the eval transform.")
        backend = self.backend
        params = {"rule": "keep_ratio", "size": [int(t.size[0]), int(t.size[1])], "longest": float(t.longest),
                  "interpolation": _interp(t, t.interpolation, backend), "backend": backend}
        if backend == "pil":
            params["pass_order"] = _pil_pass_order()
        self.add("resize", **params)

    def _CenterCropOrPad(self, t: Any) -> None:
        if getattr(t, "padding_mode", "constant") != "constant":
            raise ConversionError(f"CenterCropOrPad: padding_mode {t.padding_mode!r} is not supported; use constant.")
        self.add("center_crop", size=_hw(t, t.size), fill=_fill(t, t.fill))


def probe_images(loader_color: str = "rgb") -> list[Any]:
    """Deterministic PIL images with odd sizes, both orientations, edges and texture, to check a spec on."""
    from PIL import Image

    from edgeinfer.importers import probe_image

    out = []
    for seed, (h, w) in enumerate(((333, 517), (401, 263), (97, 131))):
        img = Image.fromarray(probe_image(h, w, seed), "RGB")
        out.append(img.convert("L") if loader_color == "l" else img)
    return out


def spec_from_transform(transform: Any, *, input_name: str = "input", output_name: str = "logits",
                        output_kind: str = "logits", labels: Iterable[str] | None = None,
                        loader_color: str = "rgb", exif_orientation: bool = False,
                        provenance: dict[str, str] | None = None, check: bool = True,
                        dynamic_size: bool = False, task: str = "classification") -> Spec:
    """Return the spec that reproduces ``transform`` (an eval transform applied to PIL images).

    ``loader_color`` is what the training loader handed the transform ("rgb": ``convert('RGB')``, "l").
    With ``check`` (the default) the spec is run against the transform on probe images and refused with
    :class:`ConversionError` if any pixel differs by more than one level of 255.
    """
    walk = _Walk(loader_color)
    walk.visit(transform)
    if walk.domain != "float":
        raise ConversionError("the transform does not end in a float tensor; add ToTensor() (v1) or "
                              "ToImage() + ToDtype(torch.float32, scale=True) (v2).")
    probes = probe_images(loader_color)
    import torch

    with torch.no_grad():
        shapes = {tuple(transform(p).shape) for p in probes}
    if len({s[0] for s in shapes}) != 1 or (len(shapes) != 1 and not dynamic_size):
        raise ConversionError(f"the transform gives different output shapes for different images ({sorted(shapes)}); "
                              "a model input needs a fixed size: add a CenterCrop or an exact Resize (a segmenter "
                              "whose input follows the image is exported with converters.export(..., "
                              "task='semantic_segmentation')).")
    c, h, w = shapes.pop()
    if dynamic_size:
        h = w = None
    meta = {"exporter": "edgeinfer.converters", "transform": repr(transform)[:4000]}
    meta.update(_versions())
    meta.update(provenance or {})
    spec = Spec(
        schema=SCHEMA,
        decode=Decode(color=loader_color, exif_orientation=exif_orientation),
        steps=tuple(walk.steps),
        input=InputSpec(name=input_name, shape=(None, c, h, w)),
        output=OutputSpec(name=output_name, kind=output_kind),
        labels=tuple(labels) if labels is not None else None,
        provenance=meta,
        task=task,
    ).validate()
    if check:
        worst = pixel_parity(spec, transform, probes)
        if worst > 1.0 + 1e-3:
            raise ConversionError(
                f"the spec reproduces the transform only within {worst:.2f} levels of 255 on probe images "
                f"(expected at most 1). Steps: {[repr(s) for s in spec.steps]}. Please report this transform.")
    return spec


def pixel_parity(spec: Spec, transform: Any, images: Iterable[Any]) -> float:
    """Largest difference, in levels of 255, between the transform's output and edgeinfer's, over images."""
    import torch

    from edgeinfer.pipeline.preprocess import Preprocessor

    pre = Preprocessor(spec)
    std = 1.0
    levels = 255.0
    for s in spec.steps:
        if s.op == "normalize":
            std = float(np.min(np.abs(s.params["std"])))
        if s.op == "to_float" and s.params["scale"] == "none":
            levels = 1.0
    worst = 0.0
    for img in images:
        with torch.no_grad():
            ref = transform(img).numpy().astype(np.float64)
        got = pre(np.asarray(img), color="rgb")
        worst = max(worst, float(np.max(np.abs(ref - got))) * std * levels)
    # float32 round-off makes one level read as 1.0000075; report levels to 1e-4
    worst = round(worst, 4)
    return worst


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "torchvision", "timm", "pillow", "edgeinfer"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out
