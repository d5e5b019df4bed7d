"""The preprocessing spec: the one contract between the workstation and the device.

A spec is plain data (frozen dataclasses) that round-trips through JSON. It is stored in the ONNX
model's ``metadata_props`` under :data:`METADATA_KEY` and validated once, here, before anything uses it.
The meaning of each step lives in :mod:`edgeinfer.pipeline.ops`; this module only owns the document's shape.

What a spec guarantees on any machine, as measured (x86-64 and arm64 Cortex-A72/A76, benchmarks/README.md):
PIL-family and torch uint8 steps are integer arithmetic and give the training library's pixels exactly, on
every architecture; float steps (torch float resize, normalise) follow float32 rounding and differ across
machines by float32 round-off only (the C kernel is built without FP contraction, so aarch64's fused
multiply-add does not change a sum); OpenCV's own ops (``backend: opencv`` resizes, the letterbox's resize)
run OpenCV's SIMD code, which is not bit-identical across architectures: at most 1 level of 255 measured
between x86-64 and arm64. The self-test tolerance covers that (1 level moved probabilities by 2.1e-6
against a 1e-3 tolerance).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

from edgeinfer.pipeline import ops
from edgeinfer.errors import SchemaVersionError, SpecError

SCHEMA = "edgeinfer.spec/1"
METADATA_KEY = "edgeinfer.spec"

COLORS = ("rgb", "l")
ALPHA = ("drop",)
# The training loader whose decoding the runtime reproduces (edgeinfer.pipeline.images.decode): "pil" is
# PIL.Image.open(f).convert(mode) (torchvision's default loader), "keras" is keras.utils.load_img (the
# same, except that grayscale keeps 16/32-bit images unscaled), "opencv" is cv2.imread (IMREAD_COLOR).
LOADERS = ("pil", "keras", "opencv")
# The task names; what each does with the model's outputs is the task table's (edgeinfer.tasks).
# The task table (edgeinfer.tasks) registers each task here as it is imported -- the package's own
# __init__ imports it, so every Spec sees every task. The schema checks what all specs share and hands the
# rest to the task's record: the task names live in the table alone.
_TASKS: dict[str, Any] = {}


def register_task(task: Any) -> None:
    """Make ``task`` (an :class:`edgeinfer.tasks.base.Task`) known to spec validation."""
    _TASKS[task.name] = task


# The detector decoders' names; what each reads is the decoder table's (edgeinfer.tasks.decoders), which
# registers its built-in entries here as it is imported, and those of edgeinfer.register_decoder.
DECODERS: dict[str, Any] = {}
# Decoders of your own installed as packages: an entry point in this group names a module (imported, it calls
# edgeinfer.register_decoder) or a decoder function (registered under the entry point's name), loaded the first
# time a spec names a decoder this runtime does not know -- so the CLI, stream and serve find them too.
DECODER_ENTRY_POINTS = "edgeinfer.decoders"
_plugins_loaded = False
_register_decoder: Any = None  # edgeinfer.register_decoder, set by the decoder table as it is imported


def _load_decoder_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=DECODER_ENTRY_POINTS):
        obj = ep.load()
        if callable(obj) and not isinstance(obj, type) and ep.name not in DECODERS and _register_decoder:
            _register_decoder(ep.name, obj)
# single-label: softmax over logits, or probabilities as they are; multi-label: sigmoid per class;
# "raw": a detector's outputs, read by the spec's postprocess section
TTA_MODES = ("hflip", "five_crop", "ten_crop", "multiscale")
TTA_MERGES = ("probabilities", "logits")
# "embedding": a feature vector as the model gives it; "embedding_l2": the runtime L2-normalises it
OUTPUT_KINDS = ("logits", "probabilities", "multilabel_logits", "multilabel_probabilities", "raw", "embedding",
                "embedding_l2")
EMBEDDING_KINDS = ("embedding", "embedding_l2")
# The model input's contract: where the channel axis is, the element type it takes (uint8: the graph scales
# itself, so the steps end without scaling; the values are rounded and clipped to 0-255), and the channel
# order the model expects after preprocessing (the steps always produce RGB; "bgr" reverses the channels,
# as Caffe-era models and Keras' "caffe" mode expect).
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float16", "uint8")
CHANNEL_ORDERS = ("rgb", "bgr")
# ONNX tensor types of each dtype
ONNX_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "uint8": "tensor(uint8)"}
# Rules for a model's other inputs, fed per image (or per batch for "constant"):
#   orig_hw / orig_wh     the original image's size, [h, w] or [w, h]
#   input_hw / input_wh   the model input's size after preprocessing
#   scale_hw / scale_wh   model input size / original size per axis (PaddleDetection's scale_factor)
#   constant              ``value`` as given, the same for every image
EXTRA_RULES = ("orig_hw", "orig_wh", "input_hw", "input_wh", "scale_hw", "scale_wh", "constant")

# Untrusted model files must not make us allocate without bound.
MAX_SPEC_BYTES = 16 * 1024 * 1024
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 1_000
MAX_STEPS = 64


def expect(ok: bool, where: str, expected: str, found: Any, fix: str) -> None:
    if not ok:
        raise SpecError(f"{where}: expected {expected}, found {found!r}. {fix}")


REEXPORT = "Re-export the model with converters.export(...) or fix the spec JSON."


def _check_keys(where: str, data: Mapping[str, Any], cls: type) -> None:
    expect(isinstance(data, Mapping), where, "a JSON object", type(data).__name__, REEXPORT)
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}. {REEXPORT}")


@dataclass(frozen=True)
class Decode:
    """What the training loader handed to the first transform.

    ``color`` is the image mode the first step receives ("rgb": PIL ``convert('RGB')``, "l": grayscale);
    ``exif_orientation`` says whether the loader rotated images by their EXIF tag (PIL's ``Image.open``
    does not, ``cv2.imread`` does); ``alpha`` says what happened to an alpha channel ("drop", as
    ``convert('RGB')`` does: no compositing); ``loader`` names the library that decoded the files (see
    :data:`LOADERS`: it decides 16-bit, palette-with-transparency and CMYK pixels). Specs written before
    ``loader`` existed read as "pil", what they assumed.
    """

    color: str = "rgb"
    exif_orientation: bool = False
    alpha: str = "drop"
    loader: str = "pil"

    def validate(self) -> None:
        expect(self.color in COLORS, "decode.color", f"one of {COLORS}", self.color, REEXPORT)
        expect(isinstance(self.exif_orientation, bool), "decode.exif_orientation", "true or false",
                self.exif_orientation, REEXPORT)
        expect(self.alpha in ALPHA, "decode.alpha", f"one of {ALPHA}", self.alpha, REEXPORT)
        expect(self.loader in LOADERS, "decode.loader", f"one of {LOADERS}", self.loader,
                "Upgrade edgeinfer on the device, or re-export naming a loader it knows.")
        # color "l" is PIL's convert('L'); OpenCV's grayscale (IMREAD_GRAYSCALE, cvtColor) rounds otherwise
        expect(not (self.loader == "opencv" and self.color == "l"), "decode.color",
                "'rgb' with loader 'opencv' ('l' is PIL's convert('L'))", self.color,
                "Record the grayscale step as a preprocessing step after an 'rgb' decode.")

    def to_dict(self) -> dict[str, Any]:
        # "pil" is left out, so that runtimes older than the field still read the specs that need no other
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["loader"] == "pil":
            del d["loader"]
        return d


@dataclass(frozen=True)
class Step:
    """One preprocessing operation: an op name from :mod:`edgeinfer.pipeline.ops` and its parameters."""

    op: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **_plain(dict(self.params))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], index: int = 0) -> "Step":
        expect(isinstance(data, Mapping) and "op" in data, f"step {index}", "an object with an 'op' key",
                data, REEXPORT)
        params = {k: v for k, v in data.items() if k != "op"}
        return cls(op=data["op"], params=params)

    def __repr__(self) -> str:
        return ops.describe(self.op, self.params)


@dataclass(frozen=True)
class ExtraInput:
    """A model input besides the image, with the rule for its value (see :data:`EXTRA_RULES`). ``dtype`` is
    the graph's element type ("float32", "float16", "int64" or "int32"); ``value`` only for "constant"."""

    name: str
    rule: str
    dtype: str = "float32"
    value: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.value is not None:
            object.__setattr__(self, "value", tuple(float(v) for v in self.value))

    def validate(self) -> None:
        expect(isinstance(self.name, str) and self.name != "", "input.extra.name", "a non-empty string", self.name,
                REEXPORT)
        expect(self.rule in EXTRA_RULES, f"input.extra[{self.name}].rule", f"one of {EXTRA_RULES}", self.rule,
                REEXPORT)
        expect(self.dtype in ("float32", "float16", "int64", "int32"), f"input.extra[{self.name}].dtype",
                "float32, float16, int64 or int32", self.dtype, REEXPORT)
        expect((self.value is not None) == (self.rule == "constant") and
                (self.value is None or (0 < len(self.value) <= 64 and all(math.isfinite(v) for v in self.value))),
                f"input.extra[{self.name}].value", "1 to 64 finite numbers for a constant and none otherwise",
                self.value, REEXPORT)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule, "dtype": self.dtype,
                "value": None if self.value is None else list(self.value)}


@dataclass(frozen=True)
class InputSpec:
    """The model input the pipeline produces: name, layout, dtype, channel order and shape in the model's own
    layout (None = dynamic axis), and the rules for the model's other inputs (``extra``)."""

    name: str
    shape: tuple[int | None, ...]
    layout: str = "NCHW"
    dtype: str = "float32"
    channel_order: str = "rgb"
    extra: tuple[ExtraInput, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "extra", tuple(e if isinstance(e, ExtraInput) else ExtraInput(**e)
                                                for e in self.extra))

    @property
    def nchw(self) -> tuple[int | None, ...]:
        """The shape as (N, C, H, W), whatever the layout."""
        s = self.shape
        return s if self.layout == "NCHW" else (s[0], s[3], s[1], s[2])

    @property
    def channels(self) -> int:
        return int(self.nchw[1])

    @property
    def height_width(self) -> tuple[int | None, int | None]:
        """The fixed input height and width; None for a dynamic axis (the letterbox decides it per image)."""
        return tuple(None if d is None else int(d) for d in self.nchw[2:4])

    @property
    def dynamic_size(self) -> bool:
        return None in self.height_width

    def validate(self) -> None:
        expect(isinstance(self.name, str) and self.name != "", "input.name", "a non-empty string",
                self.name, REEXPORT)
        expect(self.layout in LAYOUTS, "input.layout", f"one of {LAYOUTS}", self.layout, REEXPORT)
        expect(self.dtype in DTYPES, "input.dtype", f"one of {DTYPES}", self.dtype, REEXPORT)
        expect(self.channel_order in CHANNEL_ORDERS, "input.channel_order", f"one of {CHANNEL_ORDERS}",
                self.channel_order, REEXPORT)
        ok = len(self.shape) == 4 and (self.shape[0] is None or _is_size(self.shape[0]))
        ok = ok and all(d is None or _is_size(d) for d in self.shape[1:])
        nchw = self.nchw if len(self.shape) == 4 else (None,) * 4
        ok = ok and _is_size(nchw[1])
        axes = "[batch, channels, height, width]" if self.layout == "NCHW" else "[batch, height, width, channels]"
        expect(ok, "input.shape", f"{axes} with positive ints (null for a dynamic batch, height or width)",
                list(self.shape), REEXPORT)
        expect(nchw[1] in (1, 3), "input channels", "1 or 3", nchw[1], REEXPORT)
        expect(len(self.extra) <= 8, "input.extra", "at most 8 extra inputs", len(self.extra), REEXPORT)
        for e in self.extra:
            e.validate()
        names = [self.name] + [e.name for e in self.extra]
        expect(len(set(names)) == len(names), "input.extra", "names distinct from each other and the image input",
                names, REEXPORT)


@dataclass(frozen=True)
class OutputSpec:
    """The model output: its name and whether it holds logits or probabilities."""

    name: str
    kind: str = "logits"

    def validate(self) -> None:
        expect(isinstance(self.name, str) and self.name != "", "output.name", "a non-empty string",
                self.name, REEXPORT)
        expect(self.kind in OUTPUT_KINDS, "output.kind", f"one of {OUTPUT_KINDS}", self.kind, REEXPORT)


@dataclass(frozen=True)
class SelfTest:
    """A small deterministic image (PNG, base64) and the raw model output it must reproduce."""

    image_png: str
    expected: tuple[float, ...]
    atol: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "expected", tuple(float(v) for v in self.expected))

    def validate(self) -> None:
        expect(isinstance(self.image_png, str) and len(self.image_png) > 0, "self_test.image_png",
                "base64 PNG text", type(self.image_png).__name__, REEXPORT)
        expect(len(self.expected) > 0 and all(math.isfinite(v) for v in self.expected),
                "self_test.expected", "a non-empty list of finite numbers", len(self.expected), REEXPORT)
        expect(isinstance(self.atol, (int, float)) and math.isfinite(self.atol) and self.atol > 0,
                "self_test.atol", "a positive number", self.atol, REEXPORT)


@dataclass(frozen=True)
class Postprocess:
    """How a detector's outputs become detections, with the training tool's predictor defaults.

    ``outputs``: the output names the decoder reads, in its order. ``conf``: keep candidates whose best
    class score is above it; ``iou``: NMS suppresses overlaps above it; ``max_det``: detections kept per
    image; ``max_nms``: candidates passed to NMS at most (the highest-scored); ``max_wh``: the per-class
    box offset of batched NMS; ``agnostic``: one NMS over all classes; ``multi_label``: a candidate may
    yield one detection per class above ``conf``; ``kpt_shape``: [keypoints, 2 or 3] (pose);
    ``retina_masks`` (segment): masks computed at the original frame's size (Ultralytics' ``retina_masks``)
    instead of at the model input's and mapped back;
    ``rules``: the tool and version whose letterbox inverse, NMS and clipping rules are followed.
    """

    decoder: str
    outputs: tuple[str, ...] = ()
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    max_nms: int = 30000
    max_wh: float = 7680.0
    agnostic: bool = False
    multi_label: bool = False
    kpt_shape: tuple[int, int] | None = None
    retina_masks: bool = False
    rules: str = "ultralytics==8.4.190"

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if self.kpt_shape is not None:
            object.__setattr__(self, "kpt_shape", tuple(self.kpt_shape))

    def validate(self) -> None:
        if self.decoder not in DECODERS:
            _load_decoder_plugins()
        expect(self.decoder in DECODERS, "postprocess.decoder", f"one of {tuple(DECODERS)}", self.decoder,
                "Upgrade edgeinfer on the device, attach a spec with a decoder it knows, or register your own "
                "decoder under that name with edgeinfer.register_decoder before loading the model.")
        expect(all(isinstance(o, str) and o for o in self.outputs) and 0 < len(self.outputs) <= 8,
                "postprocess.outputs", "1 to 8 output names", list(self.outputs), REEXPORT)
        for key, lo, hi in (("conf", 0.0, 1.0), ("iou", 0.0, 1.0)):
            v = getattr(self, key)
            expect(isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi,
                    f"postprocess.{key}", f"a number in [{lo}, {hi}]", v, REEXPORT)
        for key in ("max_det", "max_nms"):
            v = getattr(self, key)
            expect(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1_000_000,
                    f"postprocess.{key}", "a positive int", v, REEXPORT)
        expect(isinstance(self.max_wh, (int, float)) and self.max_wh > 0, "postprocess.max_wh",
                "a positive number", self.max_wh, REEXPORT)
        for key in ("agnostic", "multi_label", "retina_masks"):
            expect(isinstance(getattr(self, key), bool), f"postprocess.{key}", "true or false",
                    getattr(self, key), REEXPORT)
        kpt = self.kpt_shape
        expect(kpt is None or (len(kpt) == 2 and _is_size(kpt[0]) and kpt[1] in (2, 3)),
                "postprocess.kpt_shape", "[keypoints, 2 or 3]", kpt, REEXPORT)
        expect(isinstance(self.rules, str) and self.rules != "", "postprocess.rules", "a tool==version string",
                self.rules, REEXPORT)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["outputs"] = list(self.outputs)
        d["kpt_shape"] = None if self.kpt_shape is None else list(self.kpt_shape)
        return d


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation the model was validated with, applied by ``predict`` unless overridden.

    ``scales`` (multiscale only): factors applied to the resize size, e.g. [0.875, 1.0, 1.143].
    """

    mode: str
    merge: str = "probabilities"
    scales: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(v) for v in self.scales))

    def validate(self) -> None:
        expect(self.mode in TTA_MODES, "tta.mode", f"one of {TTA_MODES}", self.mode, REEXPORT)
        expect(self.merge in TTA_MERGES, "tta.merge", f"one of {TTA_MERGES}", self.merge, REEXPORT)
        ok = all(math.isfinite(v) and 0.25 <= v <= 4.0 for v in self.scales) and len(self.scales) <= 8
        ok = ok and (self.mode != "multiscale" or len(self.scales) >= 2)
        expect(ok, "tta.scales", "2 to 8 factors in [0.25, 4] for multiscale", list(self.scales), REEXPORT)


@dataclass(frozen=True)
class Spec:
    """Everything the device needs to turn a raw image into the model's input and read its output."""

    steps: tuple[Step, ...]
    input: InputSpec
    output: OutputSpec
    decode: Decode = Decode()
    task: str = "classification"
    labels: tuple[str, ...] | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)
    self_test: SelfTest | None = None
    tta: TTA | None = None
    postprocess: Postprocess | None = None
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    # -- validation -------------------------------------------------------------------------------
    def validate(self) -> "Spec":
        """Return self after checking every field; raise :class:`SpecError` naming the first bad one."""
        if self.schema != SCHEMA:
            raise SchemaVersionError(
                f"spec schema: expected {SCHEMA!r}, found {self.schema!r}. This runtime reads only "
                f"{SCHEMA!r}; upgrade edgeinfer on the device or re-export with the matching converters.")
        task = _TASKS.get(self.task)
        expect(task is not None, "task", f"one of {tuple(_TASKS)}", self.task, REEXPORT)
        expect((self.postprocess is not None) == task.detector, "postprocess",
                f"a postprocess section for a detector and none for a {self.task} model",
                None if self.postprocess is None else self.postprocess.decoder, REEXPORT)
        expect(self.output.kind in task.output_kinds, "output.kind", f"one of {task.output_kinds} for a "
                f"{self.task} model", self.output.kind, REEXPORT)
        expect(self.tta is None or task.tta is not None, "tta", f"none for a {self.task} model (test-time "
               "augmentation is merged for classifiers only)", self.tta, REEXPORT)
        if self.postprocess is not None:
            self.postprocess.validate()
        if task.validate is not None:
            task.validate(self)
        self.decode.validate()
        self.input.validate()
        self.output.validate()
        expect(0 < len(self.steps) <= MAX_STEPS, "steps", f"1 to {MAX_STEPS} steps", len(self.steps), REEXPORT)
        for i, step in enumerate(self.steps):
            ops.validate(step.op, step.params, where=f"step {i} '{step.op}'")
        ops.validate_sequence([s.op for s in self.steps], [s.params for s in self.steps],
                              channels=self.input.channels)
        if self.labels is not None:
            expect(len(self.labels) <= MAX_LABELS, "labels", f"at most {MAX_LABELS} labels", len(self.labels),
                    REEXPORT)
            bad = [i for i, s in enumerate(self.labels) if not isinstance(s, str) or len(s) > MAX_LABEL_CHARS]
            expect(not bad, f"labels[{bad[0] if bad else 0}]", f"a string of at most {MAX_LABEL_CHARS} chars",
                    self.labels[bad[0]] if bad else None, REEXPORT)
        if self.input.dtype == "uint8":
            scaled = [s.op for s in self.steps if s.op == "normalize" or (s.op == "to_float" and
                                                                         s.params.get("scale") != "none")]
            expect(not scaled, "steps", "no scaling or normalising for a uint8 input (the graph does it: the steps "
                    "end with to_float(scale='none'), values 0-255)", scaled, REEXPORT)
        if self.self_test is not None:
            self.self_test.validate()
        if self.tta is not None:
            self.tta.validate()
        return self

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "task": self.task,
            "decode": self.decode.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "input": {"name": self.input.name, "shape": list(self.input.shape), "layout": self.input.layout,
                      "dtype": self.input.dtype, "channel_order": self.input.channel_order,
                      "extra": [e.to_dict() for e in self.input.extra]},
            "output": {"name": self.output.name, "kind": self.output.kind},
            "labels": list(self.labels) if self.labels is not None else None,
            "provenance": dict(self.provenance),
            "tta": None if self.tta is None else {"mode": self.tta.mode, "merge": self.tta.merge,
                                                  "scales": list(self.tta.scales)},
            "postprocess": None if self.postprocess is None else self.postprocess.to_dict(),
            "self_test": None if self.self_test is None else {
                "image_png": self.self_test.image_png, "expected": list(self.self_test.expected),
                "atol": self.self_test.atol},
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Spec":
        """Build and validate a spec from plain data; raise :class:`SpecError` naming the bad key."""
        _check_keys("spec", data, cls)
        schema = data.get("schema")
        if schema != SCHEMA:
            raise SchemaVersionError(
                f"spec schema: expected {SCHEMA!r}, found {schema!r}. This runtime reads only {SCHEMA!r}; "
                f"upgrade edgeinfer on the device or re-export with the matching converters.")
        for key in ("steps", "input", "output"):
            expect(key in data, f"spec.{key}", "present", None, REEXPORT)
        expect(isinstance(data["steps"], list), "spec.steps", "a list", type(data["steps"]).__name__, REEXPORT)
        decode = data.get("decode") or {}
        _check_keys("spec.decode", decode, Decode)
        _check_keys("spec.input", data["input"], InputSpec)
        for e in data["input"].get("extra") or ():
            _check_keys("spec.input.extra", e, ExtraInput)
        _check_keys("spec.output", data["output"], OutputSpec)
        self_test = data.get("self_test")
        if self_test is not None:
            _check_keys("spec.self_test", self_test, SelfTest)
        tta = data.get("tta")
        if tta is not None:
            _check_keys("spec.tta", tta, TTA)
        post = data.get("postprocess")
        if post is not None:
            _check_keys("spec.postprocess", post, Postprocess)
        labels = data.get("labels")
        expect(labels is None or isinstance(labels, list), "spec.labels", "a list of strings or null",
                type(labels).__name__, REEXPORT)
        provenance = data.get("provenance") or {}
        expect(isinstance(provenance, Mapping), "spec.provenance", "an object", type(provenance).__name__,
                REEXPORT)
        try:
            spec = cls(
                schema=schema,
                task=data.get("task", "classification"),
                decode=Decode(**decode),
                steps=tuple(Step.from_dict(s, i) for i, s in enumerate(data["steps"])),
                input=InputSpec(**data["input"]),
                output=OutputSpec(**data["output"]),
                labels=tuple(labels) if labels is not None else None,
                provenance={str(k): str(v) for k, v in provenance.items()},
                self_test=SelfTest(**self_test) if self_test is not None else None,
                tta=TTA(**tta) if tta is not None else None,
                postprocess=Postprocess(**post) if post is not None else None,
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"spec: a field has the wrong type ({exc}). {REEXPORT}") from exc
        return spec.validate()

    @classmethod
    def from_json(cls, text: str | bytes) -> "Spec":
        """Parse spec JSON (as stored in model metadata) and validate it."""
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError(f"spec JSON: expected at most {MAX_SPEC_BYTES} bytes, found {len(text)}. "
                            "This is not a spec edgeinfer wrote; re-export the model.")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"spec JSON: expected valid JSON, found a parse error ({exc}). {REEXPORT}") from exc
        return cls.from_dict(data)

    def describe(self) -> str:
        """A human-readable, multi-line rendering of the pipeline, as `edgeinfer inspect` prints it."""
        lines = [f"decode: loader={self.decode.loader} color={self.decode.color} "
                 f"exif_orientation={self.decode.exif_orientation} alpha={self.decode.alpha}"]
        lines += [f"  {i}. {s!r}" for i, s in enumerate(self.steps)]
        axes = ("batch", "channels", "height", "width") if self.input.layout == "NCHW" else \
            ("batch", "height", "width", "channels")
        order = " BGR (channels reversed)" if self.input.channel_order == "bgr" else ""
        lines.append(f"layout: {self.input.layout} {self.input.dtype}{order} -> input '{self.input.name}' "
                     f"{[n if d is None else d for n, d in zip(axes, self.input.shape)]}")
        for e in self.input.extra:
            value = f" = {list(e.value)}" if e.value is not None else ""
            lines.append(f"extra input '{e.name}' ({e.dtype}): {e.rule}{value}")
        if self.postprocess is not None:
            p = self.postprocess
            extra = f" kpt_shape={list(p.kpt_shape)}" if p.kpt_shape else ""
            extra += f" retina_masks={p.retina_masks}" if _TASKS[self.task].mask is not None else ""
            lines.append(f"postprocess: {p.decoder} {list(p.outputs)} conf>{p.conf} iou>{p.iou} max_det={p.max_det} "
                         f"max_nms={p.max_nms} agnostic={p.agnostic} multi_label={p.multi_label}{extra} "
                         f"({p.rules} rules)")
        return "\n".join(lines)


def _is_size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= ops.MAX_SIDE


def _plain(obj: Any) -> Any:
    """Turn mapping proxies and tuples into JSON-ready dicts and lists."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
