"""The deployment doctor: checks that find the silent failures, each with a stable code and the fix.

Runtime checks need only the model file and, optionally, a few images. Checks against the training
reference (colour order, resize, parity with torch) live in ``converters.doctor`` and add their findings
to the same report. ``edgeinfer check`` runs both and writes JSON, a markdown report and plots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeinfer import tasks
from edgeinfer import importers as sources
from edgeinfer.tasks.detections import Detections
from edgeinfer.errors import ImageError, ModelError, SpecError, SpecMissingError
from edgeinfer.tasks.classification import class_scores, to_probabilities
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


def _load(path: Path, findings: list[Finding], device: str = "cpu") -> Any:
    from edgeinfer.model import load

    try:
        return load(path, device=device)
    except SpecMissingError as exc:
        findings.append(Finding("spec_missing", "error", str(exc).split(". ")[0] + ".",
                                "The runtime cannot guess preprocessing. " + sources.WAYS))
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
    if peak > 20:
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


def _output_checks(model: Any, raw: np.ndarray, findings: list[Finding], measured: dict[str, Any]) -> np.ndarray:
    scores = class_scores(raw).astype(np.float64)
    looks_prob = bool(np.all(scores >= -1e-6) and np.all(scores <= 1 + 1e-6)
                      and np.allclose(scores.sum(1), 1.0, atol=1e-3))
    kind = model.spec.output.kind
    if kind.startswith("multilabel"):
        return to_probabilities(scores.astype(np.float32), kind)  # per-class sigmoids need not sum to 1
    if kind == "logits" and looks_prob and scores.shape[1] > 1:
        findings.append(Finding(
            "double_softmax", "error", "the spec says the output is logits but the model already outputs "
            "probabilities (every row sums to 1): softmax would be applied twice, flattening confidences.",
            "Re-export with output_kind='probabilities' (converters.export detects it by default)."))
    if kind == "probabilities" and not looks_prob:
        findings.append(Finding(
            "double_softmax", "error", "the spec says the output is probabilities but the rows do not sum to 1: "
            "these are logits and scores would be read without softmax.",
            "Re-export with output_kind='logits'."))
    return to_probabilities(scores.astype(np.float32), kind)


def _collapse(probs: np.ndarray, findings: list[Finding], measured: dict[str, Any]) -> None:
    n, k = probs.shape
    top = probs.argmax(1)
    counts = np.bincount(top, minlength=k)
    share = float(counts.max() / n)
    variation = float(probs.std(axis=0).max())
    measured["top1_share_of_most_common_class"] = round(share, 3)
    measured["largest_score_std_across_images"] = round(variation, 6)
    if n >= 2 and variation < 1e-3:
        findings.append(Finding(
            "collapse", "error", f"outputs barely change across {n} different images (largest per-class std "
            f"{variation:.1e}): the model ignores its input.",
            "Check the weights were loaded and trained (random-init or mis-exported models do this), and that "
            "BatchNorm running statistics are sane (mobilenet_v3 needs them recomputed after short training).",
            {"variation": variation}))
    elif n >= 8 and k > 2 and share >= 0.9:
        findings.append(Finding(
            "collapse", "warning", f"one class ({int(counts.argmax())}) wins {share:.0%} of {n} images.",
            "If the images are varied, the model or its preprocessing is broken; compare with the training "
            "pipeline (edgeinfer check --reference-transform ...).", {"share": share}))


def _determinism(model: Any, batch: np.ndarray, findings: list[Finding], measured: dict[str, Any]) -> None:
    first, second = model.run(batch), model.run(batch)
    nondet = float(np.max(np.abs(first - second)))
    measured["repeat_max_abs_diff"] = nondet
    if nondet > 1e-5:
        findings.append(Finding(
            "train_mode", "error", f"the same input gives different outputs on repeated runs (max diff {nondet:.2e}): "
            "Dropout or another training-time op is active in the graph.",
            "Call model.eval() before exporting (converters.export does, and warns)."))
    if batch.shape[0] >= 2 and model.fixed_batch is None:
        singles = np.concatenate([model.run(batch[i:i + 1]) for i in range(batch.shape[0])])
        dep = float(np.max(np.abs(first - singles)))
        measured["batch_vs_single_max_abs_diff"] = dep
        if dep > 1e-4:
            findings.append(Finding(
                "batch_dependent", "error", f"an image's output depends on the other images in its batch (max diff "
                f"{dep:.2e}): BatchNorm is using batch statistics (exported in train mode).",
                "Call model.eval() before exporting and re-export."))


# -- detectors ---------------------------------------------------------------------------------------
def _tool_rule(model: Any, findings: list[Finding]) -> None:
    """An Ultralytics file carrying an edgeinfer spec: does the spec letterbox the way the tool's predictor
    does? A plain resize, another pad value or the square where the tool uses the minimal rectangle each
    change scores and boxes without any error."""
    meta = model.session.get_modelmeta().custom_metadata_map
    if not sources.is_ultralytics(meta) or METADATA_KEY not in meta:
        return
    dynamic = not isinstance(model.session.get_outputs()[0].shape[0], int)
    try:
        want = {s.op: s.params for s in sources.from_ultralytics(meta, dynamic=dynamic).steps}
    except (ModelError, SpecError):
        return
    have = {s.op: s.params for s in model.spec.steps}
    tool = f"Ultralytics {meta.get('version', '?')}"
    fix = ("Delete the edgeinfer spec from the file (Ultralytics exports load from their own metadata) or "
           "re-attach one with a letterbox as the tool's predictor uses it.")
    if "letterbox" in want and "letterbox" not in have:
        findings.append(Finding(
            "letterbox_missing", "error", f"the spec resizes without a letterbox, but {tool}'s predictor letterboxes "
            f"(aspect ratio kept, pad {want['letterbox'].get('fill', 114)}): objects are stretched, scores drop and "
            "boxes come back in the wrong place.", fix, {"spec_steps": sorted(have)}))
        return
    if "letterbox" not in want:
        return
    lb_want, lb_have = want["letterbox"], have["letterbox"]
    if lb_have.get("fill", 114) != lb_want.get("fill", 114):
        findings.append(Finding(
            "letterbox_fill", "error", f"the letterbox pads with {lb_have.get('fill', 114)}, {tool}'s predictor with "
            f"{lb_want.get('fill', 114)}: the border the model sees differs from training.", fix,
            {"spec_fill": lb_have.get("fill", 114), "tool_fill": lb_want.get("fill", 114)}))
    if bool(lb_have.get("auto", False)) != bool(lb_want.get("auto", False)):
        findings.append(Finding(
            "letterbox_auto", "error",
            "the spec letterboxes to " + ("the minimal stride-aligned rectangle" if lb_have.get("auto") else
                                          "the full square") + f" where {tool}'s predictor uses " +
            ("the minimal rectangle (a dynamic file)" if lb_want.get("auto") else "the full square (a static file)") +
            ": another input size, other scores and boxes.", fix,
            {"spec_auto": bool(lb_have.get("auto")), "tool_auto": bool(lb_want.get("auto"))}))


def _task_checks(model: Any, items: Sequence[Any], findings: list[Finding], measured: dict[str, Any]) -> None:
    """Detectors and segmenters: the results on the images, checked by the task's own rules (the task table)."""
    _tool_rule(model, findings)
    results, inputs = [], []
    for item in items:
        try:
            batch, sizes = model.prepare([item])
        except ImageError:
            continue
        inputs.append(batch)
        results.append((model.finish(model.infer(batch), sizes, batch.shape[2:])[0], sizes[0]))
    measured["images"] = len(results)
    if not results:
        return
    flat = np.concatenate([b.reshape(b.shape[1], -1) for b in inputs], axis=1)[None, :, :, None]
    _input_stats(model, flat, findings, measured)
    if isinstance(results[0][0], Detections):
        measured["detections"] = sum(len(d) for d, _ in results)
        measured["detections_per_image"] = [len(d) for d, _ in results]
    for found in tasks.get(model.spec.task).checks(model.spec, results):
        measured.update({k: v for k, v in found["details"].items() if k not in measured})
        findings.append(Finding(**found))
    first = inputs[0]
    a, b = model.infer(first), model.infer(first)
    nondet = max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))
    measured["repeat_max_abs_diff"] = nondet
    if nondet > 1e-5:
        findings.append(Finding(
            "train_mode", "error", f"the same input gives different outputs on repeated runs (max diff {nondet:.2e}).",
            "Call model.eval() before exporting."))


def doctor(model_path: str | os.PathLike, *, images: Sequence[Any] | str | os.PathLike | None = None,
           reference_transform: Any = None, torch_model: Any = None, plots: str | os.PathLike | None = None,
           max_images: int = 64, device: str = "cpu") -> CheckReport:
    """The deployment doctor (``edgeinfer.check``): the runtime checklist on the device; with the training
    ``reference_transform`` and/or ``torch_model``, or ``plots`` (a folder), also the reference checks and
    debug plots of the workstation side (``converters.doctor``, which needs torch and matplotlib)."""
    if reference_transform is None and torch_model is None and plots is None:
        return check(model_path, images=images, max_images=max_images, device=device)
    try:
        from converters.doctor import doctor as reference_doctor
    except ImportError as exc:
        raise ModelError(f"check: the reference checks and plots run on the workstation side (converters, torch), "
                         f"which this machine cannot import ({exc}). Run the runtime checks alone here, or install "
                         "edgeinfer[export,plots] where training happened.") from exc
    return reference_doctor(model_path, images if images is not None else [], transform=reference_transform,
                            torch_model=torch_model, plots_dir=plots, max_images=max_images)


def check(model_path: str | os.PathLike, *, images: Sequence[Any] | str | os.PathLike | None = None,
          max_images: int = 64, device: str = "cpu") -> CheckReport:
    """Run the runtime checklist on a model file (and images, when given) and return the findings.

    ``device`` is the profile the model is loaded with, as on the device (its providers, threads, precision)."""
    from edgeinfer.tools.bench import environment
    from edgeinfer.pipeline.images import image_files

    path = Path(model_path)
    findings: list[Finding] = []
    measured: dict[str, Any] = {}
    model = _load(path, findings, device)
    if model is None:
        return CheckReport(str(path), tuple(findings), measured, device=str(device))
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
    if tasks.get(model.spec.task).checks is not None:
        _task_checks(model, items, findings, measured)
        return CheckReport(str(path), tuple(findings), measured, device=str(device), environment=env)
    arrays = []
    for item in items:
        try:
            arrays.append(model.preprocess(item))
        except ImageError:
            continue
    measured["images"] = len(arrays)
    if not arrays:
        return CheckReport(str(path), tuple(findings), measured, device=str(device), environment=env)
    batch = np.stack(arrays)
    _input_stats(model, batch, findings, measured)
    raw = np.concatenate([model.run(batch[i:i + 16]) for i in range(0, len(batch), 16)])
    probs = _output_checks(model, raw, findings, measured)
    _collapse(probs, findings, measured)
    _determinism(model, batch[:8], findings, measured)
    return CheckReport(str(path), tuple(findings), measured, device=str(device), environment=env)
