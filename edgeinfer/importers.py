"""Specs for models edgeinfer did not export: one way in, whatever preprocessing description the user has.

An importer turns another tool's description into a :class:`Preprocessing` (the spec without the model);
:func:`resolve` completes it against the ONNX session (input name and shape, output name, whether the
graph already ends in softmax, labels) and checks the two agree before anything uses it. Sources:

- an edgeinfer :class:`~edgeinfer.spec.Spec`, its dict, or its JSON file;
- a plain ``{"size", "mean", "std", "interpolation", ...}`` dict (:func:`from_plain`);
- a Hugging Face ``preprocessor_config.json`` (:func:`from_huggingface`);
- Ultralytics' own ONNX metadata (:func:`from_ultralytics`, used by ``load`` without any attach step);
- on a workstation only (these need torch): a torchvision/timm transform object, or ``"timm:NAME"``
  for a timm model's pretrained preprocessing, handed to ``converters.importers``.

Data-only sources are read here without importing torch, so a device can take them as a sidecar:
``edgeinfer.load("model.onnx", spec="preprocessor_config.json")``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from edgeinfer import tasks
from edgeinfer.pipeline import ops
from edgeinfer.errors import ModelError, SpecError
from edgeinfer.spec import (DECODERS, ONNX_TYPES, OUTPUT_KINDS, SCHEMA, Decode, InputSpec, OutputSpec,
                            Postprocess, Spec, Step)

WAYS = (
    "Give it a spec in one of these ways: export it with converters.export(model, path, transform=...); "
    "attach one to the file with `edgeinfer attach MODEL --from SOURCE -o OUT` or converters.attach_spec(src, "
    "dst, SOURCE); or pass it beside a read-only file with edgeinfer.load(path, spec=SOURCE). SOURCE is an "
    "edgeinfer spec (object, dict or JSON file), a plain {size, mean, std, interpolation} dict (or the "
    "--size/--mean/--std/--interpolation flags), a Hugging Face preprocessor_config.json, a torchvision/timm "
    "transform or 'timm:MODEL_NAME' (on a machine with torch), or a Keras description ('keras:ResNet50', or "
    "{'mode': 'caffe', 'size': [h, w]}). Ultralytics ONNX exports need none of this: their own metadata is read "
    "directly."
)


@dataclass(frozen=True)
class Preprocessing:
    """What an importer knows before it sees the model: the spec minus input/output names and shapes.

    ``output_kind`` None means "measure it on the model" (a graph ending in softmax is detected).
    """

    steps: tuple[Step, ...]
    decode: Decode = Decode()
    labels: tuple[str, ...] | None = None
    output_kind: str | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)
    task: str = "classification"
    # Detectors: how their outputs are read (output names are filled in from the model when empty).
    postprocess: Postprocess | None = None
    # The input contract, where the source says it (keys of InputSpec: layout, dtype, channel_order, extra);
    # what it leaves out is read from the graph (element type, channel axis) or defaults (RGB, no extras).
    contract: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(v) for v in self.labels))
        object.__setattr__(self, "provenance", MappingProxyType({str(k): str(v) for k, v in self.provenance.items()}))


# -- plain dictionaries -----------------------------------------------------------------------------
PLAIN_KEYS = ("size", "mean", "std", "interpolation", "resize", "crop_pct", "backend", "scale", "letterbox", "task",
              "postprocess", "layout", "dtype", "channel_order", "extra_inputs", "pad_square", "long_side",
              "crop_offsets", "mean_order")
# crop_offsets -> the centre crop's anchor: torchvision rounds (half to even), hand-written code floors
CROP_OFFSETS = {"round": "center", "floor": "center_floor"}
CONTRACT_KEYS = {"layout": "layout", "dtype": "dtype", "channel_order": "channel_order", "extra_inputs": "extra"}
_PLAIN_HELP = ("A plain source is {'size': 224 or [h, w], 'mean': [...], 'std': [...], 'interpolation': "
               "'bilinear'} with optional 'resize' (shorter side before a centre crop, torchvision's "
               "Resize(256) + CenterCrop(224)), 'crop_pct' (timm: shorter side to size / crop_pct, then crop), "
               "'backend' (pil | torch | opencv, default pil) and 'scale' ('div255', default, or 'none' for "
               "0-255 inputs). Without 'resize' or 'crop_pct' the image is resized to exactly size. A detector "
               "adds 'task' (detection | pose | obb), 'postprocess' ({'decoder': ..., 'conf': ..., ...}, see "
               "edgeinfer.spec.Postprocess) and, for a YOLO-style input, 'letterbox' (true, or {'auto', 'stride', "
               "'fill', 'scaleup', 'center'}) instead of the resize. A semantic segmenter adds 'task': "
               "'semantic_segmentation' (no postprocess: its class logits are upsampled to the frame, then argmax). The "
               "input contract, when the graph does not say it: 'layout' (NCHW | NHWC), 'dtype' (float32 | float16 | "
               "uint8: with 'scale': 'none' and no mean/std, the graph scales), 'channel_order' (rgb | bgr: what the "
               "model expects) and 'extra_inputs' ([{'name', 'rule': orig_hw | orig_wh | input_hw | input_wh | "
               "scale_hw | scale_wh | constant, 'dtype', 'value'}]). Hand-written pipelines: 'pad_square' (true, "
               "'top_left' or 'center', or {'anchor', 'fill'}: pad to a square, then resize to size), 'long_side' "
               "('truncate', torchvision, or 'round': how 'resize' sizes the long side), 'crop_offsets' ('round', "
               "torchvision, or 'floor'), 'mean_order' ('rgb' or 'bgr': the channel order mean/std are written in; "
               "required with channel_order 'bgr' and per-channel values).")


def _pair(where: str, v: Any) -> list[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                 and 0 < x <= ops.MAX_SIDE for x in v)):
        raise SpecError(f"{where}: expected a positive int or [height, width], found {v!r}. {_PLAIN_HELP}")
    return [int(v[0]), int(v[1])]


def _triple(where: str, v: Any, default: float) -> list[float]:
    if v is None:
        return [default] * 3
    vals = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    if not (isinstance(vals, (list, tuple)) and len(vals) in (1, 3)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vals)):
        raise SpecError(f"{where}: expected a number or a list of 1 or 3 numbers, found {v!r}.")
    vals = [float(x) for x in vals]
    return vals * 3 if len(vals) == 1 else vals


def _normalize_steps(scale: str, mean: list[float], std: list[float]) -> list[Step]:
    if any(s == 0 for s in std):
        raise SpecError(f"std: expected non-zero values, found {std}.")
    steps = [Step("to_float", {"scale": scale})]
    if mean != [0.0] * len(mean) or std != [1.0] * len(std):
        steps.append(Step("normalize", {"mean": mean, "std": std}))
    return steps


def _resize_params(interpolation: str, backend: str, **params: Any) -> dict[str, Any]:
    p = {"interpolation": interpolation, "backend": backend, **params}
    if backend == "pil":
        p["pass_order"] = "pillow13"
    elif backend == "torch":
        p.setdefault("antialias", True)
    return p


def from_plain(source: Mapping[str, Any]) -> Preprocessing:
    """A preprocessing from ``{size, mean, std, interpolation}`` (see :data:`PLAIN_KEYS`)."""
    unknown = sorted(set(source) - set(PLAIN_KEYS))
    if unknown:
        raise SpecError(f"plain source: unknown key(s) {unknown}; allowed: {list(PLAIN_KEYS)}. {_PLAIN_HELP}")
    if "size" not in source:
        raise SpecError(f"plain source: expected a 'size', found keys {sorted(source)}. {_PLAIN_HELP}")
    size = _pair("size", source["size"])
    backend = source.get("backend", "pil")
    if backend not in ops.BACKENDS:
        raise SpecError(f"backend: expected one of {sorted(ops.BACKENDS)}, found {backend!r}.")
    interpolation = str(source.get("interpolation", "bilinear")).lower().replace("-", "_")
    if interpolation not in ops.BACKENDS[backend]:
        raise SpecError(f"interpolation: expected one of {ops.BACKENDS[backend]} for backend {backend!r}, "
                        f"found {source.get('interpolation')!r}.")
    scale = source.get("scale", "div255")
    if scale not in ("div255", "none"):
        raise SpecError(f"scale: expected 'div255' (inputs 0-1) or 'none' (inputs 0-255), found {scale!r}.")
    if "resize" in source and "crop_pct" in source:
        raise SpecError("plain source: give 'resize' or 'crop_pct', not both; both say how big to resize before "
                        "the centre crop.")
    steps: list[Step] = []
    anchor = CROP_OFFSETS.get(source.get("crop_offsets", "round"))
    if anchor is None:
        raise SpecError(f"crop_offsets: expected one of {sorted(CROP_OFFSETS)}, found {source['crop_offsets']!r}.")
    crop = {"size": size} if anchor == "center" else {"size": size, "anchor": anchor}
    long_side = source.get("long_side", "truncate")
    if long_side not in ops.LONG_SIDES:
        raise SpecError(f"long_side: expected one of {list(ops.LONG_SIDES)}, found {long_side!r}.")
    if long_side != "truncate" and "resize" not in source:
        raise SpecError("long_side: applies to 'resize' (the shorter side before the crop); give 'resize' too.")
    if "crop_offsets" in source and not ("resize" in source or "crop_pct" in source):
        raise SpecError("crop_offsets: applies to the centre crop that 'resize' or 'crop_pct' makes; give one.")
    square = source.get("pad_square")
    if square is not None and square is not False:
        if any(k in source for k in ("resize", "crop_pct", "letterbox")):
            raise SpecError("pad_square: pads to a square, then resizes to exactly size; it does not combine with "
                            "'resize', 'crop_pct' or 'letterbox'.")
        params = ({} if square is True else {"anchor": square} if isinstance(square, str)
                  else dict(square) if isinstance(square, Mapping) else None)
        if params is None:
            raise SpecError(f"pad_square: expected true, 'top_left', 'center' or {{'anchor', 'fill'}}, found {square!r}.")
        ops.validate("pad_square", params, where="pad_square")
        steps.append(Step("pad_square", params))
    if "crop_pct" in source:
        pct = source["crop_pct"]
        if not (isinstance(pct, (int, float)) and 0 < pct <= 1):
            raise SpecError(f"crop_pct: expected a number in (0, 1], found {pct!r}.")
        # timm: scale_size = floor(size / crop_pct), the shorter side for a square crop
        scaled = [math.floor(s / pct) for s in size]
        resize = ({"rule": "shorter", "size": scaled[0]} if size[0] == size[1] else {"rule": "exact", "size": scaled})
        steps += [Step("resize", _resize_params(interpolation, backend, **resize)), Step("center_crop", crop)]
    elif "resize" in source:
        shorter = source["resize"]
        if not (isinstance(shorter, int) and not isinstance(shorter, bool) and 0 < shorter <= ops.MAX_SIDE):
            raise SpecError(f"resize: expected the shorter side as a positive int, found {shorter!r}.")
        rounding = {"long_side": long_side} if long_side != "truncate" else {}
        steps += [Step("resize", _resize_params(interpolation, backend, rule="shorter", size=shorter, **rounding)),
                  Step("center_crop", crop)]
    elif source.get("letterbox"):
        extra = source["letterbox"] if isinstance(source["letterbox"], Mapping) else {}
        steps.append(Step("letterbox", {"size": size, **extra}))
    else:
        steps.append(Step("resize", _resize_params(interpolation, backend, rule="exact", size=size)))
    mean, std = _triple("mean", source.get("mean"), 0.0), _triple("std", source.get("std"), 1.0)
    order = source.get("mean_order")
    if order not in (None, "rgb", "bgr"):
        raise SpecError(f"mean_order: expected 'rgb' or 'bgr' (the order mean and std are written in), found {order!r}.")
    if order is None and source.get("channel_order") == "bgr" and (len(set(mean)) > 1 or len(set(std)) > 1):
        raise SpecError(f"mean/std with channel_order 'bgr': expected 'mean_order' ('rgb' or 'bgr') saying which "
                        f"channel each value belongs to, found none (mean {mean}). A BGR model's code often lists "
                        "them blue first; say so with 'mean_order': 'bgr', or 'rgb' if red comes first.")
    if order == "bgr":  # the steps normalise RGB; the contract hands the graph BGR afterwards
        mean, std = mean[::-1], std[::-1]
    steps += _normalize_steps(scale, mean, std)
    provenance = {"source": "plain", "plain": json.dumps(dict(source))}
    contract = {CONTRACT_KEYS[k]: source[k] for k in CONTRACT_KEYS if k in source}
    name = source.get("task", "classification")
    task = tasks.get(name) if isinstance(name, str) else None
    if task is None:
        raise SpecError(f"plain source: task: expected one of {sorted(tasks.TABLE)}, found {name!r}. {_PLAIN_HELP}")
    if not task.detector and "postprocess" not in source:
        return Preprocessing(steps=tuple(steps), provenance=provenance, task=name, contract=contract)
    post = source.get("postprocess")
    if not task.detector or not isinstance(post, Mapping) or "decoder" not in post:
        raise SpecError(f"plain source: a detector needs 'task' (one of "
                        f"{[t.name for t in tasks.TABLE.values() if t.detector]}) and 'postprocess' with a "
                        f"'decoder' (one of {list(DECODERS)}); found task={name!r}, postprocess={post!r}. {_PLAIN_HELP}")
    unknown = sorted(set(post) - {f.name for f in dataclasses.fields(Postprocess)})
    if unknown:
        raise SpecError(f"postprocess: unknown key(s) {unknown}; allowed: "
                        f"{[f.name for f in dataclasses.fields(Postprocess)]}.")
    return Preprocessing(steps=tuple(steps), provenance=provenance, task=name, output_kind="raw",
                         postprocess=Postprocess(**post), contract=contract)


# -- Hugging Face image processors ------------------------------------------------------------------
# PIL resample codes as Hugging Face configs store them.
_PIL_CODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# Processors whose integer "size" means the shorter edge (get_size_dict(default_to_square=False)).
_HF_SHORTEST_EDGE_TYPES = ("Bit", "ChineseCLIP", "CLIP", "ConvNext", "MobileNetV1", "MobileNetV2", "MobileViT")
# Keys that change pixels in ways no edgeinfer op reproduces: refused when they are on.
_HF_REFUSED_FLAGS = ("do_pad", "flip_channel_order", "do_flip_channel_order", "rescale_offset", "include_top",
                     "do_color_quantize", "apply_ocr", "do_split_image", "do_image_splitting")
HF_BACKENDS = ("pil", "torchvision")
# Processors that belong to one task other than classification (by class-name prefix).
_HF_TASKS = {"Segformer": "semantic_segmentation"}


def _hf_backend(kind: str, backend: str | None) -> tuple[str, str]:
    """Which resize the processor runs, and why: the class name says it for 'Fast' and 'Pil' classes;
    a bare name depends on the transformers version that ran it (4: PIL, 5: torchvision)."""
    if backend is not None:
        if backend not in HF_BACKENDS:
            raise SpecError(f"Hugging Face backend: expected one of {HF_BACKENDS}, found {backend!r}.")
        return backend, "given"
    if kind.endswith("Fast"):
        return "torchvision", "class name ends in Fast"
    if kind.endswith("Pil"):
        return "pil", "class name ends in Pil"
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        raise SpecError(
            f"Hugging Face {kind or 'image processor'}: the config does not say which resize ran. transformers 4 "
            f"runs {kind} with PIL, transformers 5 (AutoImageProcessor's default) with torchvision, and their "
            "pixels differ. transformers is not installed here to ask; pass backend='pil' or 'torchvision' "
            "(CLI: --hf-backend), whichever the model was evaluated with.") from None
    major = int(version.split(".")[0])
    if major >= 5 and importlib.util.find_spec("torchvision") is not None:
        return "torchvision", f"transformers {version} runs {kind} with torchvision by default"
    return "pil", f"transformers {version} runs {kind} with PIL"


def _hf_size(kind: str, size: Any, *, crop: bool) -> dict[str, int]:
    """A size as transformers' get_size_dict reads it: an int crop is square; an int size is the shorter
    edge for the processors that say so, else square."""
    if isinstance(size, int) and not isinstance(size, bool):
        square = crop or not kind.startswith(_HF_SHORTEST_EDGE_TYPES)
        return {"height": size, "width": size} if square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    if isinstance(size, Mapping):
        return {k: int(v) for k, v in size.items() if v is not None}
    raise SpecError(f"Hugging Face {kind}: size {size!r} is not a dict, an int or [height, width].")


def from_huggingface(config: Mapping[str, Any] | str | os.PathLike, *, backend: str | None = None) -> Preprocessing:
    """A preprocessing from a Hugging Face image processor config (``preprocessor_config.json``).

    Follows transformers' processors: resize (``size`` as height/width, or ``shortest_edge`` with the
    long side truncated, ConvNeXT's ``crop_pct``), centre crop with the offsets floored, rescale, normalise;
    images converted to RGB. ``backend`` is the resize that ran: "pil" (transformers 4 "slow" classes and
    ``*Pil`` classes) or "torchvision" (``*Fast`` classes; transformers 5's default): uint8 tensors resized
    by torchvision with antialiasing, not PIL's pixels. Labels come from a ``config.json`` beside the file.
    """
    if isinstance(config, Mapping):
        return _huggingface(config, backend=backend)
    path = Path(config)
    if path.is_dir():
        path = path / "preprocessor_config.json"
    return _huggingface(_read_json(path), backend=backend, where=str(path))


def _huggingface(config: Mapping[str, Any], *, backend: str | None, where: str = "Hugging Face config") -> Preprocessing:
    """:func:`from_huggingface` on a config already read; ``where`` is its file, whose folder may hold
    the model's ``config.json`` (labels)."""
    labels = _hf_labels(Path(where).parent / "config.json") if where.endswith(".json") else None
    kind = str(config.get("image_processor_type", ""))
    on = [k for k in _HF_REFUSED_FLAGS if config.get(k)]
    if on:
        raise SpecError(f"{where}: {kind or 'the processor'} has {on} switched on; edgeinfer does not reproduce "
                        "those steps. Supported: resize, centre crop, rescale, normalise.")
    resolved, why = _hf_backend(kind, backend)
    bk = "pil" if resolved == "pil" else "torch"
    code = config.get("resample", 2)
    interpolation = _PIL_CODES.get(code) if isinstance(code, int) else None
    if interpolation is None:
        raise SpecError(f"{where}: resample {code!r} is not a PIL resample code 0-5.")
    if bk == "torch":
        if interpolation in ("box", "hamming"):
            raise SpecError(f"{where}: resample {interpolation} has no torchvision tensor resize; transformers "
                            "refuses it on the torchvision backend too. Use backend='pil'.")
        interpolation = "nearest_exact" if interpolation == "nearest" else interpolation  # transformers' mapping
    extra = {"uint8_arithmetic": "native"} if bk == "torch" else {}
    steps: list[Step] = []
    crop_pct = config.get("crop_pct")
    if config.get("do_resize", "size" in config):
        size = _hf_size(kind, config.get("size"), crop=False)
        if crop_pct is not None and not kind.startswith("ConvNext"):
            raise SpecError(f"{where}: crop_pct on {kind} is processor-specific and not reproduced; edgeinfer "
                            "knows ConvNext's. Convert with an explicit size and crop instead.")
        if set(size) == {"height", "width"}:
            steps.append(Step("resize", _resize_params(interpolation, bk, rule="exact",
                                                       size=[size["height"], size["width"]], **extra)))
        elif set(size) == {"shortest_edge"}:
            edge = size["shortest_edge"]
            if crop_pct is not None and edge < 384:  # ConvNext: shorter side to int(edge / crop_pct), crop
                steps += [Step("resize", _resize_params(interpolation, bk, rule="shorter",
                                                        size=int(edge / crop_pct), **extra)),
                          Step("center_crop", {"size": [edge, edge], "anchor": "center_floor"})]
            elif crop_pct is not None:  # ConvNext warps to a square at 384 and above
                steps.append(Step("resize", _resize_params(interpolation, bk, rule="exact", size=[edge, edge],
                                                           **extra)))
            else:
                steps.append(Step("resize", _resize_params(interpolation, bk, rule="shorter", size=edge, **extra)))
        else:
            raise SpecError(f"{where}: size {dict(size)} is not supported for classification; expected "
                            "{'height', 'width'} or {'shortest_edge'}.")
    if config.get("do_center_crop", False):
        crop = _hf_size(kind, config.get("crop_size"), crop=True)
        if set(crop) != {"height", "width"}:
            raise SpecError(f"{where}: crop_size {crop} must have height and width.")
        steps.append(Step("center_crop", {"size": [crop["height"], crop["width"]], "anchor": "center_floor"}))
    factor = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0
    mean = _triple("image_mean", config.get("image_mean"), 0.0) if config.get("do_normalize", True) else [0.0] * 3
    std = _triple("image_std", config.get("image_std"), 1.0) if config.get("do_normalize", True) else [1.0] * 3
    if math.isclose(factor, 1 / 255, rel_tol=1e-9):
        steps += _normalize_steps("div255", mean, std)
    else:  # x * f, then (x - m) / s  ==  (x - m / f) / (s / f)
        steps += _normalize_steps("none", [m / factor for m in mean], [s / factor for s in std])
    if not config.get("do_resize", "size" in config) and not config.get("do_center_crop", False):
        raise SpecError(f"{where}: the processor neither resizes nor crops, so the input size depends on the "
                        "image. A model input needs a fixed size.")
    prov = {"source": "huggingface", "image_processor_type": kind, "huggingface_backend": resolved,
            "huggingface_backend_reason": why}
    if bk == "torch":
        prov["uint8_arithmetic"] = "native assumed (torchvision's uint8 kernel: x86-64 AVX2 or bicubic)"
    task = next((t for prefix, t in _HF_TASKS.items() if kind.startswith(prefix)), "classification")
    return Preprocessing(steps=tuple(steps), labels=labels, provenance=prov, task=task)


def _hf_labels(path: Path) -> tuple[str, ...] | None:
    if not path.is_file():
        return None
    id2label = _read_json(path).get("id2label")
    if not isinstance(id2label, Mapping) or not id2label:
        return None
    try:
        keys = sorted(int(k) for k in id2label)
    except ValueError:
        return None
    if keys != list(range(len(keys))):
        return None
    return tuple(str(id2label.get(str(k), id2label.get(k))) for k in keys)


# -- Keras ------------------------------------------------------------------------------------------
# keras.applications: the preprocess_input mode of each architecture family and its default input size.
# "none": the graph preprocesses itself (EfficientNet, MobileNetV3, ConvNeXt, RegNet take 0-255 RGB).
KERAS_MODES = ("caffe", "tf", "torch", "none")
_KERAS_APPS: dict[str, tuple[str, int]] = {
    **{n: ("caffe", 224) for n in ("VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152")},
    **{n: ("tf", 224) for n in ("MobileNet", "MobileNetV2", "ResNet50V2", "ResNet101V2", "ResNet152V2", "NASNetMobile")},
    **{n: ("tf", 299) for n in ("InceptionV3", "Xception", "InceptionResNetV2")}, "NASNetLarge": ("tf", 331),
    **{n: ("torch", 224) for n in ("DenseNet121", "DenseNet169", "DenseNet201")},
    **{f"EfficientNetB{i}": ("none", s) for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
    **{f"EfficientNetV2{k}": ("none", s) for k, s in (("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300),
                                                      ("S", 384), ("M", 480), ("L", 480))},
    **{n: ("none", 224) for n in ("MobileNetV3Small", "MobileNetV3Large", "ConvNeXtTiny", "ConvNeXtSmall",
                                  "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge")},
}
KERAS_KEYS = ("mode", "size", "interpolation", "keep_aspect_ratio", "loader")
# ImageNet statistics as keras.applications.imagenet_utils applies them
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def from_keras(source: Mapping[str, Any] | str) -> Preprocessing:
    """A preprocessing as a Keras user trains: ``keras.utils.load_img(path, target_size=size,
    interpolation=...)`` (PIL ``convert("RGB")``, then a PIL resize of the whole image to the size, nearest by
    default, no crop), ``img_to_array`` (float32 0-255) and ``preprocess_input`` of the ``mode``: "caffe"
    (RGB to BGR, the ImageNet mean subtracted in BGR, no scaling), "tf" (x / 127.5 - 1), "torch" (x / 255,
    ImageNet mean and std), "none" (the graph preprocesses: EfficientNet, MobileNetV3, ConvNeXt). The input
    is channels-last (NHWC), as Keras models are. ``source``: ``"keras:ResNet50"`` (a keras.applications
    name: its mode and default size) or ``{"mode": ..., "size": 224 or [h, w], "interpolation": "nearest"}``.
    ``image_dataset_from_directory`` (TensorFlow's decoder and a float, non-antialiased bilinear resize) and
    ``keep_aspect_ratio=True`` (a crop that depends on the image) are refused by name."""
    if isinstance(source, str):
        name = source.split(":", 1)[1]
        if name not in _KERAS_APPS:
            raise SpecError(f"{source}: expected a keras.applications name, one of {sorted(_KERAS_APPS)}. For another "
                            "Keras model give {'mode': 'caffe' | 'tf' | 'torch' | 'none', 'size': [h, w]}.")
        mode, size = _KERAS_APPS[name]
        source = {"mode": mode, "size": size}
    unknown = sorted(set(source) - set(KERAS_KEYS))
    if unknown:
        raise SpecError(f"Keras source: unknown key(s) {unknown}; allowed: {list(KERAS_KEYS)}.")
    if source.get("loader", "load_img") != "load_img":
        raise SpecError(f"Keras source: loader {source['loader']!r} is not reproduced. image_dataset_from_directory "
                        "decodes with TensorFlow and resizes in float32 without antialiasing (not PIL's rounded "
                        "resize). Evaluate the model with keras.utils.load_img (loader 'load_img'), or export "
                        "with a torch transform edgeinfer reads.")
    if source.get("keep_aspect_ratio", False):
        raise SpecError("Keras source: load_img(keep_aspect_ratio=True) crops to the target's aspect ratio with a box "
                        "that depends on each image; not reproduced. Use keep_aspect_ratio=False (the default).")
    mode = source.get("mode")
    if mode not in KERAS_MODES:
        raise SpecError(f"Keras source: mode {mode!r}; expected one of {KERAS_MODES} (preprocess_input's mode, "
                        "'none' when the model preprocesses inside its graph).")
    if "size" not in source:
        raise SpecError("Keras source: expected 'size' (load_img's target_size, [height, width]).")
    size = _pair("size", source["size"])
    interpolation = str(source.get("interpolation", "nearest")).lower()
    if interpolation not in ops.BACKENDS["pil"]:
        raise SpecError(f"Keras source: interpolation {interpolation!r}; load_img maps "
                        f"{list(ops.BACKENDS['pil'])} to PIL's filters.")
    steps = [Step("resize", _resize_params(interpolation, "pil", rule="exact", size=size))]
    contract: dict[str, Any] = {"layout": "NHWC"}
    if mode == "caffe":  # x[..., ::-1] - mean_bgr  ==  (x_rgb - mean_rgb), then the channels reversed
        steps += _normalize_steps("none", list(_CAFFE_MEAN_BGR[::-1]), [1.0, 1.0, 1.0])
        contract["channel_order"] = "bgr"
    elif mode == "tf":
        steps += _normalize_steps("none", [127.5] * 3, [127.5] * 3)
    elif mode == "torch":
        steps += _normalize_steps("div255", list(_TORCH_MEAN), list(_TORCH_STD))
    else:
        steps += _normalize_steps("none", [0.0] * 3, [1.0] * 3)
    return Preprocessing(steps=tuple(steps), contract=contract,
                         provenance={"source": "keras", "keras": json.dumps(dict(source))})


# -- Ultralytics ------------------------------------------------------------------------------------
# Ultralytics' task names -> ours.
ULTRALYTICS_TASKS = {"classify": "classification", "detect": "detection", "pose": "pose", "obb": "obb",
                     "segment": "segment"}


def is_ultralytics(meta: Mapping[str, str]) -> bool:
    """Whether ONNX metadata is Ultralytics' own (written by its exporter)."""
    return meta.get("author") == "Ultralytics" or {"task", "imgsz", "names", "stride"} <= set(meta)


def _literal(meta: Mapping[str, str], key: str, default: Any = None) -> Any:
    if key not in meta and default is not None:
        return default
    try:
        return ast.literal_eval(meta[key])
    except (KeyError, ValueError, SyntaxError) as exc:
        raise SpecError(f"Ultralytics metadata: expected a Python literal under {key!r}, found "
                        f"{meta.get(key)!r}. Re-export with ultralytics.") from exc


# Ultralytics' predictor letterboxes a dynamic ONNX to its default imgsz, not the export's.
ULTRALYTICS_DEFAULT_IMGSZ = 640


def from_ultralytics(meta: Mapping[str, str], *, dynamic: bool | None = None) -> Preprocessing:
    """The preprocessing and postprocessing Ultralytics' predictor (8.4) applies to this export, from its
    metadata; ``dynamic``: whether the file's batch axis is symbolic (the predictor's test), else the
    metadata's export argument.

    Classification: a PIL resize of the shorter side to ``imgsz`` (bilinear), centre crop, RGB, scaled to
    0-1, no mean/std (``classify_transforms``); the graph ends in softmax. Detection, pose and oriented
    boxes: a letterbox with pad value 114 -- for a static file the full ``imgsz`` canvas; for a dynamic one
    the minimal stride-aligned rectangle (``auto``) at the predictor's default size 640 (what
    ``YOLO(file).predict(frame)`` uses; the export's ``imgsz`` is ignored there) -- RGB, 0-1; outputs
    decoded by the raw head (then NMS) or, for ``nms=True`` and end-to-end exports, read as they are.
    RT-DETR: a stretch to ``imgsz`` (no padding), normalised boxes per query, no NMS. Segment: as detect,
    with the mask prototypes as a second output.
    """
    task = meta.get("task")
    imgsz = _pair("Ultralytics imgsz", _literal(meta, "imgsz"))
    if task not in ULTRALYTICS_TASKS:
        raise ModelError(f"Ultralytics task {task!r}: expected one of {sorted(ULTRALYTICS_TASKS)}.")
    channels = int(meta.get("channels", 3))
    if channels != 3:
        raise ModelError(f"Ultralytics model with {channels} channels: expected 3 (RGB).")
    _literal(meta, "names")  # refuses a value that is not a Python literal
    found = file_labels({"names": meta["names"]})
    labels = found[1] if found else None
    version = meta.get("version", "?")
    provenance = {"source": "ultralytics", "ultralytics": version, "ultralytics_task": task,
                  "export_imgsz": f"{imgsz[0]}x{imgsz[1]}"}
    h, w = imgsz
    if not tasks.get(ULTRALYTICS_TASKS[task]).detector:  # Ultralytics' classify
        resize = {"rule": "shorter", "size": h} if h == w else {"rule": "exact", "size": [h, w]}
        steps = (Step("resize", _resize_params("bilinear", "pil", **resize)),
                 Step("center_crop", {"size": [h, w]}),
                 Step("to_float", {"scale": "div255"}))
        return Preprocessing(steps=steps, labels=labels, output_kind="probabilities", provenance=provenance)
    args = _literal(meta, "args", {})
    if dynamic is None:
        dynamic = bool(args.get("dynamic", False))
    end2end = bool(_literal(meta, "end2end", False))
    stride = int(max(_literal(meta, "stride", 32), 1))
    rtdetr = "RTDETR" in meta.get("head", "")
    if dynamic and not rtdetr:
        side = stride_ceil(ULTRALYTICS_DEFAULT_IMGSZ, stride)
        h = w = side
        provenance["imgsz"] = (f"{side} (the predictor's default for a dynamic file; exported at {imgsz}: "
                               "load(path, imgsz=...) as predict(imgsz=...))")
    letterbox = {"size": [h, w], "auto": bool(dynamic) and not rtdetr, "stride": stride, "fill": 114}
    if rtdetr:
        letterbox["scale_fill"] = True
    steps = (Step("letterbox", letterbox), Step("to_float", {"scale": "div255"}))
    kpt = _literal(meta, "kpt_shape") if "kpt_shape" in meta else None  # written by pose exports only
    decoder = "detr" if rtdetr else "ultralytics_nms" if (args.get("nms") or end2end) else "ultralytics_raw"
    post = Postprocess(decoder=decoder, kpt_shape=tuple(kpt) if kpt else None, rules=f"ultralytics=={version}")
    return Preprocessing(steps=steps, labels=labels, output_kind="raw", provenance=provenance,
                         task=ULTRALYTICS_TASKS[task], postprocess=post)


def stride_ceil(side: int, stride: int) -> int:
    """``side`` rounded up to a multiple of ``stride``, at least one stride: Ultralytics' ``check_imgsz``."""
    return max(math.ceil(side / stride) * stride, stride)


def at_size(spec: Spec, imgsz: int | Sequence[int], path: str | os.PathLike = "model") -> Spec:
    """``spec`` letterboxing to ``imgsz`` (an int or [h, w]), as ``YOLO(file).predict(imgsz=...)`` runs a dynamic
    file: each side rounded up to the letterbox's stride (Ultralytics' ``check_imgsz``). A graph fixed at its
    size runs only at that size; a spec without a letterbox has no size to change."""
    sides = [imgsz, imgsz] if isinstance(imgsz, int) and not isinstance(imgsz, bool) else list(imgsz)
    if len(sides) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= ops.MAX_SIDE
                                  for v in sides):
        raise SpecError(f"imgsz: expected an int or [height, width] of ints in 1..{ops.MAX_SIDE}, found {imgsz!r}.")
    at = [i for i, s in enumerate(spec.steps) if s.op == "letterbox"]
    if not at:
        raise SpecError(f"{path}: imgsz sets the letterbox's size, and this spec has none (steps: "
                        f"{[s.op for s in spec.steps]}). Give the size in the spec's resize instead.")
    step = spec.steps[at[0]]
    stride = int(step.params.get("stride", 32))
    size = [stride_ceil(v, stride) for v in sides]
    fixed = spec.input.height_width
    if all(v is not None for v in fixed):
        if list(fixed) != size:
            raise ModelError(f"{path}: imgsz {sides} asks for {size}, but the graph's input is fixed at "
                             f"{list(fixed)}. Export the model again at that size (or with dynamic=True).")
        return spec
    steps = list(spec.steps)
    steps[at[0]] = Step("letterbox", {**step.params, "size": size})
    was = step.params.get("size")
    note = f"{size} (imgsz={imgsz!r} at load; the spec said {was})"
    return dataclasses.replace(spec, steps=tuple(steps), provenance={**spec.provenance, "imgsz": note}).validate()


# -- resolving any source against a model -----------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"{path}: expected a JSON file, found {'a directory' if path.is_dir() else 'nothing'}.")
    if path.stat().st_size > 16 * 1024 * 1024:
        raise SpecError(f"{path}: expected a small JSON file, found {path.stat().st_size} bytes.")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: expected JSON, found a parse error ({exc}).") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a JSON object, found {type(data).__name__}.")
    return data


def _from_mapping(data: Mapping[str, Any], *, hf_backend: str | None, path: Path | None = None) -> Spec | Preprocessing:
    if "schema" in data:
        return Spec.from_dict(data)
    if "image_processor_type" in data or "image_mean" in data or "do_resize" in data:
        return _huggingface(data, backend=hf_backend, **({"where": str(path)} if path is not None else {}))
    if "mode" in data:
        return from_keras(data)
    return from_plain(data)


def to_preprocessing(source: Any, *, hf_backend: str | None = None, loader_color: str = "rgb") -> Spec | Preprocessing:
    """Read ``source`` (any of the module's sources) into a Spec or a Preprocessing."""
    if isinstance(source, (Spec, Preprocessing)):
        return source
    if isinstance(source, Mapping):
        return _from_mapping(source, hf_backend=hf_backend)
    if isinstance(source, str) and source.startswith("keras:"):
        return from_keras(source)
    if (isinstance(source, str) and source.startswith("timm:")) or not isinstance(source, (str, os.PathLike)):
        return _from_torch(source, loader_color=loader_color)
    path = Path(source)
    if path.is_dir() and (path / "preprocessor_config.json").is_file():
        path = path / "preprocessor_config.json"
    return _from_mapping(_read_json(path), hf_backend=hf_backend, path=path)


# Sources only the workstation can read (a torchvision/timm transform object, "timm:NAME") are read by the
# workstation side, which plugs its reader in through this entry-point group (pyproject.toml): the runtime
# never imports it, and a device without torch gets a SpecError saying what to do instead.
READERS = "edgeinfer.readers"


def _from_torch(source: Any, *, loader_color: str) -> Preprocessing:
    """A transform object or ``timm:NAME``, read by the reader the workstation side registers."""
    fix = ("On the workstation, write the spec once (`edgeinfer attach` or converters.spec_for(...).to_json()) and "
           "give the device that JSON.")
    readers = list(importlib.metadata.entry_points(group=READERS))
    if not readers:
        raise SpecError(f"spec source {source!r:.80}: a transform object or 'timm:NAME' is read by the workstation "
                        f"side (edgeinfer[export]), which is not installed here. {fix}")
    try:
        reader = readers[0].load()
    except ImportError as exc:
        raise SpecError(f"spec source {source!r:.80}: a transform object or 'timm:NAME' is read with torch, which "
                        f"this machine cannot import ({exc}). {fix}") from exc
    return reader(source, loader_color=loader_color)


def probe_image(h: int, w: int, seed: int) -> np.ndarray:
    """A deterministic RGB test image: gradients, a checkerboard's edges and noise (used to check specs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), ((x // 7 + y // 5) % 2) * 255], -1)
    return np.clip(base + rng.integers(-40, 41, size=(h, w, 3)), 0, 255).astype(np.uint8)


def resolve(source: Any, session: Any, *, path: str | os.PathLike = "model", labels: Any = None,
            output_kind: str | None = None, hf_backend: str | None = None, loader_color: str = "rgb") -> Spec:
    """The complete, validated spec for ``session`` from ``source``, checked against the model.

    The pipeline is run on probe images of two aspect ratios: it must give one fixed size, the model's
    (when the model fixes it). Output kind, unless given: "probabilities" when the model's outputs on the
    probes are distributions (its graph ends in softmax, so none is applied again), else "logits".
    """
    if output_kind is not None and output_kind not in OUTPUT_KINDS:
        raise SpecError(f"output kind: expected one of {OUTPUT_KINDS}, found {output_kind!r}.")
    pre = to_preprocessing(source, hf_backend=hf_backend, loader_color=loader_color)
    if isinstance(pre, Spec):
        spec = pre.validate()
    else:
        spec = _complete(pre, session, path, output_kind)
    if output_kind is not None and output_kind != spec.output.kind:
        spec = dataclasses.replace(spec, output=OutputSpec(name=spec.output.name, kind=output_kind))
    if labels is not None:
        spec = dataclasses.replace(spec, labels=_labels(labels))
    elif not spec.labels:
        # a spec given beside a file that names its classes keeps those names (unless the user gives labels)
        found = file_labels(session.metadata)  # the .onnx file's metadata, whatever the engine
        if found is not None:
            key, names = found
            spec = dataclasses.replace(spec, labels=names,
                                       provenance={**spec.provenance, "labels": f"the file's metadata ({key})"})
    check_io(spec.validate(), session, path)
    return spec


# The metadata keys other tools store class names under: Ultralytics' ``names`` (a dict literal), PaddleOCR's
# and paddle2onnx's ``character`` (one name per line, or a list), a Hugging Face ``id2label`` (JSON).
LABEL_KEYS = ("names", "character", "id2label", "labels")


def file_labels(meta: Mapping[str, str]) -> tuple[str, tuple[str, ...]] | None:
    """``(key, class names)`` a model file's own metadata carries, or None when it carries none we can read."""
    for key in LABEL_KEYS:
        text = meta.get(key)
        if not isinstance(text, str) or not text.strip():
            continue
        value: Any = None
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        if isinstance(value, Mapping) and value:
            try:
                keys = sorted(int(k) for k in value)
            except (TypeError, ValueError):
                continue
            if keys == list(range(len(keys))):
                return key, tuple(str(value.get(k, value.get(str(k)))) for k in keys)
        elif isinstance(value, (list, tuple)) and value:
            return key, tuple(str(v) for v in value)
        elif value is None or isinstance(value, (str, int, float)):
            lines = tuple(line.strip() for line in text.splitlines() if line.strip())
            if len(lines) > 1:
                return key, lines
    return None


_GRAPH_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}


def _image_input(session: Any, path: str | os.PathLike) -> Any:
    inputs = [i for i in session.get_inputs() if len(i.shape) == 4]
    if len(inputs) != 1:
        raise ModelError(f"{path}: expected one 4-D image input, found "
                         f"{[(i.name, i.shape) for i in session.get_inputs()]}.")
    inp = inputs[0]
    if inp.type not in _GRAPH_DTYPES:
        raise ModelError(f"{path}: input {inp.name!r} is {inp.type}; edgeinfer feeds float32, float16 or uint8 "
                         "images.")
    return inp


def _input_spec(pre: Preprocessing, session: Any, path: str | os.PathLike, channels: int | None = None) -> InputSpec:
    """The image input's contract: what the source says, the rest from the graph -- its element type, and
    the channel axis (NHWC when the last axis, not the second, holds 1 or 3 channels); dynamic axes None."""
    inp = _image_input(session, path)
    shape = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
    given = dict(pre.contract)
    layout = given.pop("layout", None)
    if layout is None:
        layout = "NHWC" if shape[1] not in (1, 3) and shape[3] in (1, 3) else "NCHW"
    at = 1 if layout == "NCHW" else 3
    if shape[at] is None:
        shape[at] = channels or 3
    dtype = given.pop("dtype", _GRAPH_DTYPES[inp.type])
    unknown = sorted(set(given) - {"channel_order", "extra"})
    if unknown:
        raise SpecError(f"input contract: unknown key(s) {unknown}; allowed: layout, dtype, channel_order, extra.")
    spec = InputSpec(name=inp.name, shape=tuple(shape), layout=layout, dtype=dtype, **given)
    from edgeinfer.pipeline import contract

    if spec.layout in ("NCHW", "NHWC") and spec.dtype in ONNX_TYPES:
        contract.check(spec, session, str(path))  # before any probe runs the graph with it
    try:
        spec.validate()
    except SpecError as exc:
        raise SpecError(f"input contract: {exc}") from None
    return spec


def _complete_detector(pre: Preprocessing, session: Any, path: str | os.PathLike) -> Spec:
    """A detector's spec: the model's input (a dynamic height/width stays dynamic: the letterbox decides it
    per image), the outputs its decoder reads, checked on probe images."""
    ispec = _input_spec(pre, session, path)
    post = pre.postprocess
    if not post.outputs:
        names = [o.name for o in session.get_outputs()]
        post = dataclasses.replace(post, outputs=tasks.get(pre.task).default_outputs(post, names))
    spec = Spec(schema=SCHEMA, steps=pre.steps, decode=pre.decode, labels=pre.labels, task=pre.task,
                input=ispec, postprocess=post,
                output=OutputSpec(name=post.outputs[0], kind="raw"),
                provenance={"exporter": "edgeinfer.importers", **pre.provenance}).validate()
    _check_probe_sizes(spec, path)
    return spec


def _complete(pre: Preprocessing, session: Any, path: str | os.PathLike, output_kind: str | None) -> Spec:
    """Fill in what the model says (input name and shape, output name and kind), after checking that the
    pipeline makes one fixed size, the model's."""
    from edgeinfer.pipeline.preprocess import Preprocessor

    task = tasks.get(pre.task)
    if task.detector:
        return _complete_detector(pre, session, path)
    if task.dense:
        return _complete_segmenter(pre, session, path, output_kind)
    ispec = _input_spec(pre, session, path)
    n, c, h, w = ispec.nchw
    out_name = session.get_outputs()[0].name
    draft_input = _with_nchw(ispec, (n, c, h or 1, w or 1))
    draft = Spec(schema=SCHEMA, steps=pre.steps, decode=pre.decode, labels=pre.labels, input=draft_input,
                 task=pre.task, output=OutputSpec(name=out_name, kind=task.output_kinds[0]), provenance={"exporter": "edgeinfer.importers", **pre.provenance})
    runner = Preprocessor(draft)
    shapes = {runner.unchecked(probe_image(*hw, seed), color="rgb").shape
              for seed, hw in enumerate(((333, 517), (401, 263)))}
    if len(shapes) != 1:
        raise ModelError(f"{path}: the preprocessing gives different sizes for different images "
                         f"{sorted(shapes)}; a model input needs one. Add a centre crop or an exact size.")
    pc, ph, pw = shapes.pop()
    if c is not None and c != pc:
        raise ModelError(f"{path}: input {ispec.name!r} has {c} channels, the preprocessing makes {pc}. "
                         "Check the source belongs to this model.")
    if (h is not None and h != ph) or (w is not None and w != pw):
        raise ModelError(f"{path}: input {ispec.name!r} is {list(ispec.shape)} ({ispec.layout}) but the "
                         f"preprocessing makes {ph}x{pw}. Check the source's size belongs to this model.")
    spec = dataclasses.replace(draft, input=_with_nchw(ispec, (n, pc, ph, pw)))
    kind = output_kind or pre.output_kind
    if kind is None:
        kind = _measure_kind(session, runner, spec, task)
        spec = dataclasses.replace(spec, provenance={**spec.provenance, "output_kind": f"measured: {kind}"})
    return dataclasses.replace(spec, output=OutputSpec(name=out_name, kind=kind))


def _complete_segmenter(pre: Preprocessing, session: Any, path: str | os.PathLike, output_kind: str | None) -> Spec:
    """A semantic segmenter's spec: the model's input (height and width stay dynamic when the graph leaves them
    so: the preprocessing then decides them per image), its first output read as class logits (B, C, h, w)."""
    ispec = _input_spec(pre, session, path)
    out = session.get_outputs()[0]
    if len(out.shape) != 4:
        raise ModelError(f"{path}: output {out.name!r} has shape {out.shape}; a semantic segmenter gives class "
                         "logits (batch, classes, height, width).")
    spec = Spec(schema=SCHEMA, steps=pre.steps, decode=pre.decode, labels=pre.labels, task=pre.task,
                input=ispec, output=OutputSpec(name=out.name, kind=output_kind or pre.output_kind
                                               or tasks.get(pre.task).output_kinds[0]),
                provenance={"exporter": "edgeinfer.importers", **pre.provenance}).validate()
    _check_probe_sizes(spec, path)
    return spec


def _check_probe_sizes(spec: Spec, path: str | os.PathLike) -> None:
    """Run the pipeline on probe images of two aspect ratios: each must come out with the model's channels, and
    its height and width where the model fixes them (a dynamic axis takes what the pipeline makes)."""
    from edgeinfer.pipeline.preprocess import Preprocessor

    runner = Preprocessor(spec)
    h, w = spec.input.height_width
    for seed, hw in enumerate(((333, 517), (401, 263))):
        got = runner.unchecked(probe_image(*hw, seed), color="rgb").shape
        if got[0] != spec.input.channels or (h is not None and got[1] != h) or (w is not None and got[2] != w):
            raise ModelError(f"{path}: input {spec.input.name!r} is {list(spec.input.shape)} ({spec.input.layout}) "
                             f"but the preprocessing makes {list(got)} (C, H, W) for a {hw[0]}x{hw[1]} image. Check "
                             "the source belongs to this model.")


def _with_nchw(inp: InputSpec, nchw: tuple[int | None, ...]) -> InputSpec:
    """``inp`` with its shape set from (N, C, H, W) values, in its own layout."""
    n, c, h, w = nchw
    return dataclasses.replace(inp, shape=(n, c, h, w) if inp.layout == "NCHW" else (n, h, w, c))


def _labels(labels: Any) -> tuple[str, ...]:
    if isinstance(labels, (str, os.PathLike)):
        p = Path(labels)
        if not p.is_file():
            raise SpecError(f"labels: expected a text file with one label per line, found no file at {p}.")
        return tuple(line.strip() for line in p.read_text().splitlines() if line.strip())
    return tuple(str(v) for v in labels)


def _measure_kind(session: Any, runner: Any, spec: Spec, task: tasks.Task) -> str:
    """The output kind the model's outputs on probe images show (its task says how to read them)."""
    from edgeinfer.pipeline import contract

    outs = []
    for seed, hw in enumerate(((333, 517), (401, 263), (224, 224))):
        x = runner.unchecked(probe_image(*hw, seed + 10), color="rgb")[None]
        outs.append(session.run([spec.output.name], contract.feeds(spec.input, x, [hw], "probe"))[0])
    try:
        return task.kind_of(np.concatenate(outs))
    except ModelError as exc:
        raise ModelError(f"output {spec.output.name!r} has shape {outs[0].shape}: {exc}") from None


def check_io(spec: Spec, session: Any, path: str | os.PathLike = "model") -> None:
    """Refuse a spec whose input or output does not match the session's model, saying which."""
    inputs = {i.name: i for i in session.get_inputs()}
    name = spec.input.name
    if name not in inputs:
        raise ModelError(f"{path}: the spec names input {name!r}, the model has {sorted(inputs)}. "
                         "The spec belongs to another model; re-export or re-attach it.")
    model_shape = list(inputs[name].shape)
    want = list(spec.input.shape)
    ok = len(model_shape) == len(want) and all(
        not isinstance(m, int) or w is None or m == w for m, w in zip(model_shape, want))
    if not ok:
        raise ModelError(f"{path}: input {name!r} has shape {model_shape} in the model but {want} in "
                         "the spec. Re-export the model so both agree.")
    from edgeinfer.pipeline import contract

    contract.check(spec.input, session, str(path))
    outputs = [o.name for o in session.get_outputs()]
    task = tasks.get(spec.task)
    wanted = task.outputs(spec)
    missing = [o for o in wanted if o not in outputs]
    if missing:
        raise ModelError(f"{path}: the spec names output(s) {missing}, the model has "
                         f"{outputs}. Re-export or re-attach the spec.")
    if task.check_graph is not None:  # a detector's: its decoder against the graph's outputs
        task.check_graph(spec, {o.name: tuple(o.shape) for o in session.get_outputs()}, str(path))
    if task.detector:
        return
    classes = session.get_outputs()[outputs.index(spec.output.name)].shape
    n = classes[1] if len(classes) >= 2 else None
    if spec.labels is not None and isinstance(n, int) and n != len(spec.labels):
        raise ModelError(f"{path}: the spec has {len(spec.labels)} labels, the model outputs {n} "
                         "classes. Give one label per class.")
