"""The deployment doctor: checks that find the silent failures, each with a stable code and the fix.

Runtime checks need only the model file and, optionally, a few images: the spec and self-test, the attached
spec against the training tool's own rule where the file carries one (field by field), the model input's
statistics, determinism, a channel-order probe (the images again with red and blue swapped, read through the
task's confidence measure), and the task's own checks of its results (the task table's ``checks``; a task
without checks of its own gets none). Checks against the training reference (colour order,
resize, parity with torch) and the plots live on the workstation side (``converters.check``), which adds
its findings to the same report; ``edgeinfer check`` runs both when given the reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeinfer import importers
from edgeinfer.errors import ImageError, ModelError, SpecError, SpecMissingError
from edgeinfer.pipeline import ops
from edgeinfer.pipeline.preprocess import Prepared
from edgeinfer.tasks.base import Evidence
from edgeinfer.tools.reports import SCHEMAS
from edgeinfer.spec import METADATA_KEY

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One thing the doctor found: a stable ``code``, how bad it is, what it saw, and the fix."""

    code: str
    severity: str
    message: str
    fix: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message, "fix": self.fix,
                "details": self.details}


@dataclass(frozen=True)
class CheckReport:
    """All findings for one model, and the figures the checks measured."""

    model: str
    findings: tuple[Finding, ...]
    measured: dict[str, Any] = field(default_factory=dict)
    plots: tuple[str, ...] = ()
    device: str = "cpu"  # the device profile the runtime checks ran with
    environment: dict[str, Any] | None = None  # edgeinfer.tools.bench.environment() of that session

    @property
    def ok(self) -> bool:
        return not any(f.severity in ("error", "warning") for f in self.findings)

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMAS["check"], "model": self.model, "device": self.device, "ok": self.ok,
                "findings": [f.to_dict() for f in self.findings], "measured": self.measured,
                "plots": list(self.plots), "environment": self.environment}

    def to_markdown(self) -> str:
        lines = [f"# edgeinfer check: {Path(self.model).name}", "",
                 "**healthy**: no warnings." if self.ok else f"**{sum(f.severity != 'info' for f in self.findings)} "
                 "problem(s) found.**", ""]
        if self.findings:
            lines += ["| code | severity | finding | fix |", "|---|---|---|---|"]
            lines += [f"| `{f.code}` | {f.severity} | {f.message} | {f.fix} |" for f in self.findings]
            lines.append("")
        if self.measured:
            lines += ["## Measured", ""] + [f"- {k}: {v}" for k, v in self.measured.items()] + [""]
        if self.plots:
            lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in self.plots] + [""]
        return "\n".join(lines)


def _load(path: Path, findings: list[Finding], device: str = "cpu", imgsz: Any = None,
          engine: str = "onnxruntime") -> Any:
    from edgeinfer.model import load

    try:
        return load(path, device=device, imgsz=imgsz, engine=engine)
    except SpecMissingError as exc:
        findings.append(Finding("spec_missing", "error", str(exc).split(". ")[0] + ".",
                                "The runtime cannot guess preprocessing. " + importers.WAYS))
    except SpecError as exc:
        findings.append(Finding("spec_invalid", "error", str(exc), "Re-export the model with the converters that "
                                "match this runtime; never edit the spec by hand."))
    except ModelError as exc:
        code = "shape_mismatch" if "shape" in str(exc) or "input" in str(exc) else "model_unloadable"
        findings.append(Finding(code, "error", str(exc), "Re-export so the spec and the graph agree (input name, "
                                "shape, labels)."))
    return None


def _input_stats(model: Any, batch: np.ndarray, findings: list[Finding], measured: dict[str, Any]) -> None:
    spec = model.spec
    per_channel = [(float(batch[:, c].mean()), float(batch[:, c].std()), float(batch[:, c].min()),
                    float(batch[:, c].max())) for c in range(batch.shape[1])]
    measured["input_channel_stats"] = [{"mean": round(m, 4), "std": round(s, 4), "min": round(lo, 4),
                                        "max": round(hi, 4)} for m, s, lo, hi in per_channel]
    peak = max(max(abs(lo), abs(hi)) for _, _, lo, hi in per_channel)
    spread = max(s for _, s, _, _ in per_channel)
    normalized = any(s.op == "normalize" for s in spec.steps)
    # 0-255 by design: a uint8 input (the graph scales itself) and Keras' caffe and "none" modes (the mean
    # subtracted from 0-255 pixels; EfficientNet-style graphs that rescale inside)
    raw_range = spec.input.dtype == "uint8" or spec.provenance.get("source") == "keras"
    if peak > 20 and not raw_range:
        findings.append(Finding(
            "input_stats", "error", f"model inputs reach {peak:.0f}: pixel values were not scaled to 0-1 before "
            "normalisation (0-255 input into a model trained on 0-1).",
            "Add the /255 scaling (ToTensor or ToDtype(scale=True)) to the transform and re-export.",
            {"peak": peak}))
    elif spread < 0.02 or (normalized and peak < 0.1):
        findings.append(Finding(
            "input_stats", "warning", f"model inputs barely vary (largest per-channel std {spread:.4f}, peak "
            f"{peak:.3f}): normalisation or scaling applied twice, or constant frames.",
            "Check that Normalize/scaling appears once in the transform, and that the camera delivers real frames.",
            {"spread": spread, "peak": peak}))


def _determinism(model: Any, prepared: Any, findings: list[Finding], measured: dict[str, Any]) -> None:
    """The same input twice, and each image alone against its batch: a graph left in training mode differs."""
    first, second = model.infer(prepared), model.infer(prepared)
    nondet = max((float(np.max(np.abs(x - y))) for x, y in zip(first, second) if x.size), default=0.0)
    measured["repeat_max_abs_diff"] = nondet
    if nondet > 1e-5:
        findings.append(Finding(
            "train_mode", "error", f"the same input gives different outputs on repeated runs (max diff {nondet:.2e}): "
            "Dropout or another training-time op is active in the graph.",
            "Call model.eval() before exporting (converters.export does, and warns)."))
    if len(prepared) >= 2 and model.fixed_batch is None and not model.task.detector:
        singles = [model.infer(prepared[i:i + 1]) for i in range(len(prepared))]
        dep = max(float(np.max(np.abs(a - np.concatenate(s)))) for a, s in zip(first, zip(*singles)))
        measured["batch_vs_single_max_abs_diff"] = dep
        if dep > 1e-4:
            findings.append(Finding(
                "batch_dependent", "error", f"an image's output depends on the other images in its batch (max diff "
                f"{dep:.2e}): BatchNorm is using batch statistics (exported in train mode).",
                "Call model.eval() before exporting and re-export."))


# -- the training tool's own rule ---------------------------------------------------------------------
GEOMETRIC = ("resize", "center_crop", "pad", "letterbox")


def _view(steps: Sequence[Any], contract: dict[str, Any], decode: Any) -> dict[str, Any]:
    """What a pipeline decides, in one flat form both sides share: each op's parameters (with the op table's
    defaults) by op name, the input contract under "@contract", the decoded colour under "@color"."""
    v: dict[str, Any] = {s.op: ops.get(s.op).with_defaults(s.params) for s in steps}
    v["@ops"] = tuple(s.op for s in steps if s.op in GEOMETRIC)
    v["@contract"] = {"channel_order": "rgb", "layout": "NCHW", **contract}
    v["@color"] = decode.color
    return v


def _method(v: dict[str, Any]) -> Any:
    """How the pixels are resampled: the letterbox's OpenCV interpolation, or the resize's library and filter."""
    if "letterbox" in v:
        return ["opencv", v["letterbox"]["interpolation"]]
    if "resize" in v:
        r = v["resize"]
        return [r["backend"], r["interpolation"]] + (["antialias"] if r["backend"] == "torch" and r["antialias"] else [])
    return None


def _range(v: dict[str, Any]) -> Any:
    scale = v.get("to_float", {}).get("scale")
    return None if scale is None else "0-255" if scale == "none" else "0-1"  # div255 and mul_inv255: 1 ulp apart


def _normalize(v: dict[str, Any]) -> Any:
    n = v.get("normalize", {"mean": [0.0], "std": [1.0]})
    return {k: [round(float(x), 4) for x in (n[k] * 3 if len(n[k]) == 1 else n[k])] for k in ("mean", "std")}


@dataclass(frozen=True)
class ToolField:
    """One field of a spec that the training tool's own rule decides: the finding's code, the op it belongs to
    (compared only when both pipelines have that op; None: the whole pipeline), how to read it from a
    :func:`_view`, and what a mismatch does to results."""

    code: str
    op: str | None
    read: Callable[[dict[str, Any]], Any]
    harm: str


# One row a field: a new field is one line. "geometry" is reported as letterbox_missing where the tool
# letterboxes and the spec does not; the other geometric rows are compared only when the geometry agrees.
TOOL_FIELDS: tuple[ToolField, ...] = (
    ToolField("geometry", None, lambda v: list(v["@ops"]), "objects are stretched or cut otherwise than in "
              "training: scores drop and boxes come back in the wrong place"),
    ToolField("letterbox_size", "letterbox", lambda v: list(v["letterbox"]["size"]),
              "another input size: objects at another scale"),
    ToolField("letterbox_fill", "letterbox", lambda v: v["letterbox"]["fill"],
              "the border the model sees differs from training"),
    ToolField("letterbox_auto", "letterbox", lambda v: v["letterbox"]["auto"],
              "the full square where the tool uses the minimal stride-aligned rectangle, or the reverse: another "
              "input size, other scores and boxes"),
    ToolField("letterbox_stride", "letterbox",
              lambda v: v["letterbox"]["stride"] if v["letterbox"]["auto"] else None,
              "another rectangle for the minimal letterbox"),
    ToolField("letterbox_center", "letterbox", lambda v: v["letterbox"]["center"],
              "the image sits in another place of the input than in training (padding on one side): boxes and "
              "confidences shift"),
    ToolField("letterbox_scaleup", "letterbox", lambda v: v["letterbox"]["scaleup"],
              "small images enlarged, or not, unlike training"),
    ToolField("letterbox_scale_fill", "letterbox", lambda v: v["letterbox"]["scale_fill"],
              "stretched instead of padded, or the reverse"),
    ToolField("resize_size", "resize", lambda v: [v["resize"]["rule"], v["resize"]["size"], v["resize"]["max_size"]],
              "another input size or aspect rule: objects at another scale"),
    ToolField("crop_size", "center_crop", lambda v: list(v["center_crop"]["size"]),
              "another part of the image reaches the model"),
    ToolField("resize_method", None, _method, "other resampled pixels (another library or filter): scores move"),
    ToolField("color", None, lambda v: v["@color"], "grey where the model saw colour, or the reverse"),
    ToolField("channel_order", None, lambda v: v["@contract"]["channel_order"],
              "the colour channels reach the model swapped (BGR for RGB): confidences drop and colour-dependent "
              "classes are confused"),
    ToolField("layout", None, lambda v: v["@contract"]["layout"],
              "channels-first data fed to a channels-last model, or the reverse"),
    ToolField("scale", None, _range, "pixel values in another range than in training (0-255 for 0-1)"),
    ToolField("normalize", None, _normalize, "another mean/std than in training"),
)


def _tool_rule_source(model: Any) -> tuple[str, str, Any] | None:
    """The training tool's own description of this file's preprocessing, where the file carries one beside an
    attached edgeinfer spec: (who says it, the fix, the importer's reading). Ultralytics writes its predictor's
    rule into the ONNX metadata; Hugging Face writes ``preprocessor_config.json`` beside the model
    (``save_pretrained``, Optimum's ONNX export). A Keras or plain ONNX file carries none (the spec's own
    provenance is what the user claimed, not the tool's word), so it has nothing to compare."""
    meta = model.session.metadata
    if METADATA_KEY not in meta:
        return None  # the spec was read from the tool's own description: nothing to compare it with
    if importers.is_ultralytics(meta):
        dynamic = not isinstance(model.session.get_outputs()[0].shape[0], int)
        try:
            rule = importers.from_ultralytics(meta, dynamic=dynamic)
        except (ModelError, SpecError):
            return None
        return (f"Ultralytics {meta.get('version', '?')}'s predictor",
                "Delete the edgeinfer spec from the file (Ultralytics exports load from their own metadata) or "
                "re-attach one that does what the tool's predictor does: " + "; ".join(repr(s) for s in rule.steps)
                + ".", rule)
    config = Path(model.path).parent / "preprocessor_config.json"
    if not config.is_file():
        return None
    try:
        rule = importers.from_huggingface(config)
    except SpecError:
        # transformers 4 and 5 resize a bare processor class with different libraries; without transformers
        # here to ask, the spec's own resize library stands for it (the filter, sizes and values still compare)
        resize = next((s for s in model.spec.steps if s.op == "resize"), None)
        backend = "torchvision" if resize is not None and resize.params.get("backend") == "torch" else "pil"
        try:
            rule = importers.from_huggingface(config, backend=backend)
        except SpecError:
            return None
    return (f"the Hugging Face processor beside the model ({config.name}: "
            f"{rule.provenance.get('image_processor_type') or 'image processor'})",
            f"Re-attach the spec from the processor itself: `edgeinfer attach MODEL --from {config}` (or "
            "converters.attach_spec(src, dst, that file)).", rule)


def _tool_rule(model: Any, findings: list[Finding]) -> None:
    """A file that carries its training tool's own description and an attached edgeinfer spec: every field of
    :data:`TOOL_FIELDS` the tool decides is compared with the tool's rule, one finding per mismatch with both
    values. A plain resize, another pad value, padding on one side, swapped channels or another scaling each
    change scores and boxes without any error."""
    source = _tool_rule_source(model)
    if source is None:
        return
    tool, fix, rule = source
    spec = model.spec
    want = _view(rule.steps, dict(rule.contract), rule.decode)
    have = _view(spec.steps, {"channel_order": spec.input.channel_order, "layout": spec.input.layout}, spec.decode)
    if "layout" not in rule.contract:  # the tool does not say: the graph decides, as the importers read it
        want["@contract"]["layout"] = spec.input.layout
    geometry_agrees = want["@ops"] == have["@ops"]
    for f in TOOL_FIELDS:
        if f.op is not None and (f.op not in want or f.op not in have or not geometry_agrees):
            continue
        tool_value, spec_value = f.read(want), f.read(have)
        if tool_value == spec_value:
            continue
        code = f.code
        if code == "geometry" and "letterbox" in want["@ops"] and "letterbox" not in have["@ops"]:
            code = "letterbox_missing"
        findings.append(Finding(code, "error", f"{f.code.replace('_', ' ')}: the spec has {spec_value!r}, {tool} "
                                f"{tool_value!r}: {f.harm}.", fix, {"field": f.code, "spec": spec_value,
                                                                    "tool": tool_value}))


# -- the channel-order probe -------------------------------------------------------------------------
# Decided on the paired per-image confidences (the task's measure) as deployed and with red and blue swapped:
# at least PROBE_MIN_IMAGES images, the swapped run surer on the whole by PROBE_MIN_GAIN (relative) and by a
# paired t of PROBE_MIN_T. Measured (swapped against deployed, healthy files, 2026-12-04): photo classifiers
# (18 crops) resnet18 -9.7 % t -3.7, mobilenet_v3_small +5.8 % t 0.8 (surer swapped, but not consistently);
# Keras classifiers trained here (30 photos and crops) caffe -36 % t -7.1, tf -20 % t -3.4, torch -35 % t -8.7,
# none -31 % t -7.5; the shapes detector (16 frames) -26 % t -2.7; the shapes segmenter (16 scenes, trained on
# shapes of every hue) -0.4 % t -0.9. With the wrong channel order each figure turns round: caught from +11 %
# t 3.7 (resnet18) and +34 % t 2.7 (detector) to +58 % t 7.1; not caught: mobilenet -5.4 % t -0.8, the segmenter
# +0.4 % t 0.9 (their confidence does not tell the orders apart; the reference check finds them). The gain
# alone would have raised mobilenet's healthy file; the paired t (>= 2.5: p ~ 0.01 on 16 images) keeps it
# quiet, and the gain keeps a colour-blind model's chance t quiet.
PROBE_MIN_IMAGES, PROBE_MIN_GAIN, PROBE_MIN_T = 8, 0.05, 2.5


def _channel_probe(model: Any, prepared: Sequence[Prepared], outputs: Sequence[list[np.ndarray]],
                   findings: list[Finding], measured: dict[str, Any]) -> None:
    """Each image again with its model input's red and blue swapped: a model trained on the other channel order
    than the spec feeds is surer that way."""
    measure = model.task.confidence
    if measure is None or model.spec.input.channels != 3:
        return
    spec = model.spec
    as_is, swapped = [], []
    for one, outs in zip(prepared, outputs):
        other = Prepared(np.ascontiguousarray(one.batch[:, ::-1]), one.sizes)
        as_is.extend(measure(spec, outs))
        swapped.extend(measure(spec, model.infer(other)))
    d, s = np.asarray(as_is, np.float64), np.asarray(swapped, np.float64)
    n = len(d)
    diff = s - d
    spread = float(diff.std(ddof=1)) if n > 1 else 0.0
    t = float(diff.mean() / (spread / np.sqrt(n))) if spread > 0 else 0.0
    gain = float((s.sum() - d.sum()) / max(d.sum(), 1e-9))
    order = spec.input.channel_order
    other_order = "rgb" if order == "bgr" else "bgr"
    measured["channel_probe"] = {"images": n, "confidence_as_deployed": round(float(d.mean()), 4),
                                 f"confidence_{other_order}": round(float(s.mean()), 4),
                                 "relative_change": round(gain, 4), "paired_t": round(t, 2)}
    if n < PROBE_MIN_IMAGES or gain < PROBE_MIN_GAIN or t < PROBE_MIN_T:
        return
    findings.append(Finding(
        "channels_swapped", "warning", f"the model is surer with the red and blue channels of its input swapped: "
        f"fed {other_order.upper()} instead of {order.upper()}, its confidence goes from {d.mean():.3f} to "
        f"{s.mean():.3f} ({gain:+.0%}, paired t {t:.1f} over {n} images). It was most likely trained on "
        f"{other_order.upper()} input.", f"Set the input contract's channel_order to '{other_order}' (re-attach "
        f"the spec with channel_order='{other_order}', or re-export from the training transform); if the training "
        "loader read files with OpenCV, export with that loader's colour order.",
        {"spec_channel_order": order, "better_channel_order": other_order, "images": n, "relative_change": gain,
         "paired_t": t}))


def _run(model: Any, items: Sequence[Any], findings: list[Finding], measured: dict[str, Any]) -> None:
    """The model on each image (an unreadable one is skipped), then the checks every task shares and the task's
    own checks of its results."""
    _tool_rule(model, findings)
    prepared, evidence = [], Evidence([], [])
    for item in items:
        try:
            one = model.prepare([item])
        except ImageError:
            continue
        outputs = model.infer(one)
        prepared.append(one)
        evidence.outputs.append(outputs)
        evidence.results.append((model.finish(one, outputs)[0], one.sizes[0]))
    measured["images"] = len(prepared)
    if not prepared:
        return
    flat = np.concatenate([p.batch.reshape(p.batch.shape[1], -1) for p in prepared], axis=1)[None, :, :, None]
    _input_stats(model, flat, findings, measured)
    if model.task.checks is not None:
        for found in model.task.checks(model.spec, evidence, measured):
            measured.update({k: v for k, v in found["details"].items() if k not in measured})
            findings.append(Finding(**found))
    _channel_probe(model, prepared, evidence.outputs, findings, measured)
    same = [p for p in prepared if p.batch.shape == prepared[0].batch.shape][:8]
    _determinism(model, Prepared.concat(same), findings, measured)


def _frames(model: Any, items: Sequence[Any], limit: int) -> list[np.ndarray]:
    """Up to ``limit`` of the images as BGR frames, decoded as the spec's loader does (unreadable ones skipped)."""
    from edgeinfer.pipeline import images

    out = []
    for item in items:
        if len(out) >= limit:
            break
        try:
            if isinstance(item, np.ndarray):
                out.append(item)
            elif isinstance(item, (bytes, bytearray, memoryview)):
                out.append(images.decode(item, **images.loader_options(model.spec.decode)))
            else:
                out.append(images.read(item, **images.loader_options(model.spec.decode)))
        except ImageError:
            continue
    return out


MARKERS = ((0.36, 0.38), (0.62, 0.36), (0.5, 0.58), (0.38, 0.64))  # inside any centre crop of a 16:9 frame


def _marker_probe(model: Any, frames: Sequence[np.ndarray], findings: list[Finding], measured: dict[str, Any]) -> None:
    """Bright squares drawn at known points of darkened copies of the images, found again in the model input and
    mapped back through the spec's inverse geometry: where they land is where boxes, keypoints and masks land."""
    import cv2

    steps = [(s.op, s.params) for s in model.spec.steps]
    worst, worst_tol = 0.0, 1.0
    for frame in frames:
        h, w = frame.shape[:2]
        side = max(6, min(h, w) // 12)
        img = (frame // 8).astype(np.uint8)
        want = []
        for fx, fy in MARKERS:
            x, y = int(fx * w), int(fy * h)
            img[y:y + side, x:x + side] = 255
            want.append((x + side / 2, y + side / 2))
        x = model.preprocess(img)
        lo = x.reshape(x.shape[0], -1).min(axis=1)[:, None, None]
        hi = x.reshape(x.shape[0], -1).max(axis=1)[:, None, None]
        grey = ((x - lo) / np.maximum(hi - lo, 1e-12)).mean(axis=0)
        count, labels, stats, _ = cv2.connectedComponentsWithStats((grey > 0.5).astype(np.uint8))
        ih, iw = grey.shape
        found = []
        for i in range(1, count):
            left, top, bw, bh = (int(v) for v in stats[i, :4])
            if left == 0 or top == 0 or left + bw >= iw or top + bh >= ih or stats[i, cv2.CC_STAT_AREA] < 4:
                continue  # cut by a crop, or the padding: its centre is not the marker's
            ys, xs = np.nonzero(labels == i)
            wts = grey[ys, xs] - 0.5
            found.append((((xs + 0.5) * wts).sum() / wts.sum(), ((ys + 0.5) * wts).sum() / wts.sum()))
        if not found:
            continue
        chain = ops.placements(steps, h, w)
        back = ops.to_source(np.asarray(found, np.float32), chain)
        gain = np.prod([pl.scale for pl in chain], axis=0) if chain else np.ones(2)
        tol = max(1.0, 1.0 / float(np.min(gain)))  # one model-input pixel, in the frame's pixels
        err = max(float(np.min(np.linalg.norm(np.asarray(want) - b, axis=1))) for b in back)
        if err / tol > worst / worst_tol:
            worst, worst_tol = err, tol
    measured["geometry_probe_px"] = round(worst, 3)
    if worst > worst_tol:
        findings.append(Finding(
            "geometry_inverse", "error", f"markers drawn on the images and found in the model input map back "
            f"{worst:.1f} px away from where they were drawn (allowed {worst_tol:.1f}, one model-input pixel): "
            "boxes, keypoints and masks would land off by as much.", "This runtime's inverse geometry disagrees "
            "with its own pixels for this spec's steps: report it with the spec (edgeinfer inspect --json); "
            "until fixed, use a spec whose geometry is a plain resize or centre crop.",
            {"max_px": worst, "allowed_px": worst_tol}))


def _against_reference(model: Any, frames: Sequence[np.ndarray], reference: Callable[[np.ndarray], Any],
                       tolerances: dict[str, Any], findings: list[Finding], measured: dict[str, Any]) -> None:
    """The package's own pipeline (``reference``: a BGR frame -> its result) against ours, judged by the task's
    gate on what a user sees: probabilities, boxes with their classes and confidences, class maps, vectors."""
    task = model.task
    if task.sample is None or task.gate is None:
        findings.append(Finding("reference_unsupported", "info", f"a {task.name} model has no result comparison "
                                "with a reference.", "Compare its outputs yourself."))
        return
    theirs, ours = [], []
    for frame in frames:
        got = reference(frame.copy())
        theirs.append(dict(got) if isinstance(got, dict) else task.sample(model.spec, None, got))
        ours.append(task.sample(model.spec, None, model.predict(frame)))
    if not frames:
        return
    verdict = task.gate(theirs, ours, **tolerances)
    measured["reference"] = verdict.figures
    if not verdict.passed:
        shown = {k: v for k, v in verdict.figures.items() if not isinstance(v, list) or len(v) <= 16}
        findings.append(Finding(
            "reference_mismatch", "error", f"the reference pipeline and edgeinfer disagree on {len(frames)} image(s) "
            f"beyond the {task.name} gate: {shown}.", "The spec does not describe what the package does: compare "
            "its resize, padding side, crop offsets, channel order and mean/std order with the plain form's keys "
            "(README, 'Models edgeinfer did not export'), and its decoder and thresholds with the spec's "
            "postprocess.", verdict.figures))


def _run_size(model: Any, findings: list[Finding]) -> None:
    """A dynamic-input model letterboxed to another size than it was exported at (Ultralytics' predictor runs a
    dynamic file at 640 whatever it was trained at): objects reach it at another scale."""
    exported = model.spec.provenance.get("export_imgsz")
    boxes = [s for s in model.spec.steps if s.op == "letterbox"]
    if not exported or not boxes or all(v is not None for v in model.spec.input.height_width):
        return
    h, w = (int(v) for v in exported.split("x"))
    runs = list(boxes[0].params["size"])
    if runs != [h, w]:
        findings.append(Finding(
            # info, not a warning: the file runs exactly as Ultralytics' predictor runs it by default (640); whether
            # the size it was exported at is the one it was trained and validated at, only the user knows
            "imgsz_differs", "info", f"this dynamic model was exported at {h}x{w} and runs letterboxed to "
            f"{runs[0]}x{runs[1]}: objects reach it {runs[0] / h:.2g} times the size it was exported for.",
            f"If it was trained at {h}, run it there: edgeinfer.load(path, imgsz={h}) or --imgsz {h} (Ultralytics: "
            f"predict(imgsz={h})); keep {runs[0]} only if that is what you validated.",
            {"export_imgsz": [h, w], "runs_at": runs}))


def check(model_path: str | os.PathLike, *, images: Sequence[Any] | str | os.PathLike | None = None,
          max_images: int = 64, device: str = "cpu", imgsz: int | Sequence[int] | None = None,
          reference: Callable[[np.ndarray], Any] | None = None, tolerances: dict[str, Any] | None = None,
          engine: str = "onnxruntime") -> CheckReport:
    """Run the runtime checklist on a model file (and images, when given) and return the findings.

    ``device`` is the profile the model is loaded with, as on the device (its providers, threads, precision);
    ``imgsz`` the size a dynamic detector runs at, as ``edgeinfer.load(path, imgsz=...)``; ``engine`` the engine
    that runs the graph, as ``load`` takes it (the report's environment names it). ``reference`` is the
    package's own pipeline, for models whose pipeline is not a training tool's: a BGR frame -> its result
    (an object with the task's result attributes -- ``xyxy``/``class_id``/``confidence``, ``scores``,
    ``class_map``, ``vector`` -- or a dict of the gate's fields), compared on the images by the task's gate
    (``tolerances`` passed to it)."""
    from edgeinfer.tools.bench import environment
    from edgeinfer.pipeline.images import image_files

    path = Path(model_path)
    findings: list[Finding] = []
    measured: dict[str, Any] = {}
    model = _load(path, findings, device, imgsz, engine)
    if model is None:
        return CheckReport(str(path), tuple(findings), measured, device=str(device))
    _run_size(model, findings)
    env = environment(model.session, model.requested_providers, None)
    device = model.device  # the profile's own name, also when a .toml path was given
    if model.spec.self_test is None:
        findings.append(Finding("selftest_missing", "info", "the spec carries no self-test vector.",
                                "Re-export with converters.export(...) to record one."))
    else:
        st = model.self_test()
        measured["self_test_max_abs_diff"] = st.max_abs_diff
        if not st.passed:
            findings.append(Finding(
                "selftest_failed", "error", f"the embedded self-test does not reproduce on this device: max diff "
                f"{st.max_abs_diff:.2e} > tolerance {st.atol:.1e} (providers {list(st.providers)}).",
                "This device computes differently from the export machine: check the providers and precision "
                "variant in use, the image decoder build, and the model file's integrity.",
                st.to_dict()))
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        items: list[Any] = list(image_files(images))
    else:
        items = list(images or [])
    items = items[:max_images]
    _run(model, items, findings, measured)
    if items:
        frames = _frames(model, items, 8 if reference is not None else 3)
        _marker_probe(model, frames[:3], findings, measured)
        if reference is not None:
            _against_reference(model, frames, reference, dict(tolerances or {}), findings, measured)
    return CheckReport(str(path), tuple(findings), measured, device=str(device), environment=env)
