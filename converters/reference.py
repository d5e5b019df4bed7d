"""The doctor with the training reference (``converters.check``): the runtime's checklist (``edgeinfer.check``),
then colour order, resize/normalisation and parity with torch, and the debug plots.

They need torch (the user's transform and model), so they live on the workstation side and add their
findings to the runtime's :class:`edgeinfer.tools.check.CheckReport`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from converters.compare import load_like_training
from edgeinfer.tools.check import CheckReport, Finding
from edgeinfer.tools.check import check as runtime_check
from edgeinfer.pipeline import ops
from edgeinfer.pipeline.images import image_files


def _levels(spec: Any) -> float:
    """Model-input units per level of 255, from the spec's scaling and normalisation."""
    scale = 255.0
    std = 1.0
    for step in spec.steps:
        if step.op == "to_float" and step.params["scale"] == "none":
            scale = 1.0
        if step.op == "normalize":
            std = float(np.min(step.params["std"]))
    return scale * std


def _training_loader(spec: Any) -> Callable[[Any], Any]:
    mode = "RGB" if spec.decode.color == "rgb" else "L"
    return lambda item: load_like_training(item, mode)


def check(model_path: str | os.PathLike, images: Any, *, transform: Any = None, torch_model: Any = None,
           loader: Callable[[Any], Any] | None = None, plots_dir: str | os.PathLike | None = None,
           max_images: int = 64, device: str = "cpu", imgsz: Any = None, engine: str = "onnxruntime") -> CheckReport:
    """The full checklist: runtime checks, then the reference checks that ``transform``/``torch_model`` allow.

    ``loader`` turns an image (path) into what the training pipeline fed ``transform`` (default: PIL
    ``convert('RGB')`` or ``'L'`` as the spec says). ``plots_dir`` receives the debug plots. ``engine`` runs the
    graph, as ``edgeinfer.load`` takes it.
    """
    import edgeinfer
    from edgeinfer.tools import plots

    items: list[Any] = list(image_files(images)) if isinstance(images, (str, os.PathLike)) else list(images)
    items = items[:max_images]
    report = runtime_check(model_path, images=items, device=device, imgsz=imgsz, engine=engine)
    findings, measured = list(report.findings), dict(report.measured)
    written: list[str] = []
    if any(f.code in ("spec_missing", "spec_invalid", "shape_mismatch", "model_unloadable") for f in findings):
        return report
    model = edgeinfer.load(model_path, imgsz=imgsz, device=device, engine=engine)
    spec = model.spec
    scores = model.task.scores  # class probabilities: the plots and parity read them (classifiers)
    deployed = [model.preprocess(i) for i in items]
    out = Path(plots_dir) if plots_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if deployed and out is not None and scores is not None:
        batch = np.stack(deployed)
        raw = np.concatenate([model.run(batch[i:i + 16]) for i in range(0, len(batch), 16)])
        probs = scores(spec, raw)
        for name, fn in (("input_histograms.png", lambda p: plots.plot_input_histograms(batch, p)),
                         ("confidence.png", lambda p: plots.plot_confidence(probs, p)),
                         ("classes.png", lambda p: plots.plot_class_distribution(probs, spec.labels, p))):
            fn(out / name)
            written.append(str(out / name))
    if transform is not None and items:
        # the channels as the graph receives them (an input contract may reverse them), against the transform's
        fed = [d[::-1] if spec.input.channel_order == "bgr" else d for d in deployed]
        findings += _against_transform(transform, loader or _training_loader(spec), items, fed, spec,
                                       measured, out, written)
    if scores is None:  # parity with the torch model reads class scores: classifiers only so far
        return dataclasses.replace(report, findings=tuple(findings), measured=measured, plots=tuple(written))
    if torch_model is not None and transform is not None and items:
        from converters.compare import compare

        parity = compare(torch_model, transform, model_path, items)
        dep, exp = parity.candidate("deployment"), parity.candidate("export")
        measured["deployment_max_abs_diff"] = dep.max_abs_diff
        measured["deployment_top1_agreement"] = dep.top1_agreement
        if dep.top1_agreement < 1.0 or dep.max_abs_diff > 1e-3:
            where = ("the ONNX graph itself (export parity max |dp| %.1e)" % exp.max_abs_diff
                     if exp.max_abs_diff > 1e-3 else "preprocessing (export parity is fine: %.1e)" % exp.max_abs_diff)
            findings.append(Finding(
                "parity", "error", f"deployed predictions differ from torch: top-1 agreement {dep.top1_agreement:.1%}, "
                f"max |dp| {dep.max_abs_diff:.2e}; the first divergence is in {where}; worst image "
                f"{Path(dep.worst[0][0]).name}.", "Fix the step named above; `edgeinfer check --plots` shows the "
                "inputs side by side.", dep.to_dict()))
        if out is not None:
            ref_p, dep_p = _parity_probs(torch_model, transform, model, items, loader, spec)
            plots.plot_parity(ref_p, dep_p, out / "parity.png")
            written.append(str(out / "parity.png"))
    return dataclasses.replace(report, findings=tuple(findings), measured=measured, plots=tuple(written))


def _against_transform(transform: Any, load: Callable[[Any], Any], items: Sequence[Any], deployed: list[np.ndarray],
                       spec: Any, measured: dict[str, Any], out: Path | None, written: list[str]) -> list[Finding]:
    """The deployed input of each image against the training transform's, for any task: channels swapped, a
    rescaled copy (normalisation), or other pixels or another size (the resize)."""
    import torch

    with torch.no_grad():
        ref = [transform(load(i)).numpy().astype(np.float64) for i in items]
    per_level = _levels(spec)
    sizes = [(r.shape, d.shape) for r, d in zip(ref, deployed) if r.shape != d.shape]
    if sizes:
        steps = [repr(s) for s in spec.steps if ops.get(s.op).place is not None]
        return [Finding(
            "resize_mismatch", "error", f"the deployed input has another size than the training transform's on "
            f"{len(sizes)} of {len(items)} images (e.g. {list(sizes[0][1])} for {list(sizes[0][0])}); geometry "
            f"steps in the spec: {steps}.", "Re-export the spec from the training transform itself "
            "(spec_from_transform reproduces it); do not hand-write the resize.",
            {"training_shape": list(sizes[0][0]), "deployed_shape": list(sizes[0][1])})]
    direct = np.array([np.abs(r - d).max() for r, d in zip(ref, deployed)]) * per_level
    three = all(d.shape[0] == 3 for d in deployed)
    swapped = (np.array([np.abs(r - d[::-1]).max() for r, d in zip(ref, deployed)]) * per_level if three else direct)
    measured["reference_max_levels"] = round(float(direct.max()), 3)
    worst = int(np.argmax(direct))
    found = []
    if three and float(np.median(swapped)) < 0.25 * float(np.median(direct)) and direct.max() > 1.01:
        found.append(Finding(
            "color_order", "error", f"the deployed input matches the training input only with red and blue "
            f"swapped (median {np.median(direct):.1f} levels off as is, {np.median(swapped):.1f} swapped).",
            "The training loader delivered BGR (cv2.imread) or RGB differently from the spec: export with the "
            "loader's colour order, or pass color='rgb'/'bgr' to predict to match your frames."))
    elif direct.max() > 1.01:
        # an affine per-channel relation (a*ref + b) means scaling/normalisation, anything else resampling
        a, b, r2 = _affine_fit(ref, deployed)
        if r2 > 0.999 and (np.max(np.abs(a - 1)) > 0.01 or np.max(np.abs(b)) > 0.01):
            found.append(Finding(
                "input_stats", "error", f"deployed inputs are a rescaled copy of the training inputs (per-channel "
                f"scale {np.round(a, 3).tolist()}, offset {np.round(b, 3).tolist()}): normalisation or scaling "
                "differs from training.", "Export the spec from the exact training transform (mean/std, /255) "
                "with converters.export(model, path, transform=...).", {"scale": a.tolist(), "offset": b.tolist()}))
        else:
            steps = [repr(s) for s in spec.steps if ops.get(s.op).place is not None]
            mean = float(np.mean([np.abs(r - d).mean() for r, d in zip(ref, deployed)]) * per_level)
            found.append(Finding(
                "resize_mismatch", "error", f"deployed pixels differ from the training transform's by up to "
                f"{direct.max():.1f} levels of 255 (mean {mean:.2f}); geometry steps in the spec: {steps}.",
                "Re-export the spec from the training transform itself (spec_from_transform reproduces it within "
                "1 level); do not hand-write the resize.", {"max_levels": float(direct.max())}))
    if out is not None:
        from edgeinfer.tools import plots

        name = out / "preprocessing.png"
        plots.plot_preprocessing(ref[worst], deployed[worst], spec, name,
                                 title=f"{Path(str(items[worst])).name}: worst of {len(items)} images")
        written.append(str(name))
    return found


def _affine_fit(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """Per channel, the least-squares ``got = a * ref + b`` over (C, H, W) inputs, and the worst channel's R²."""
    a, b, r2 = [], [], []
    for c in range(ref[0].shape[0]):
        x = np.concatenate([r[c].ravel() for r in ref])
        y = np.concatenate([g[c].ravel() for g in got]).astype(np.float64)
        A = np.stack([x, np.ones_like(x)], axis=1)
        (ac, bc), *_ = np.linalg.lstsq(A, y, rcond=None)
        resid = y - (ac * x + bc)
        r2.append(1 - resid.var() / max(y.var(), 1e-12))
        a.append(ac)
        b.append(bc)
    return np.asarray(a), np.asarray(b), float(min(r2))


def _parity_probs(torch_model: Any, transform: Any, model: Any, items: Sequence[Any], loader: Any,
                  spec: Any) -> tuple[np.ndarray, np.ndarray]:
    import torch

    load = loader or _training_loader(spec)
    with torch.no_grad():
        out = torch_model(torch.stack([transform(load(i)) for i in items]).float()).numpy()
    from edgeinfer.tasks.classification import class_scores, to_probabilities

    ref = to_probabilities(class_scores(out), spec.output.kind)
    dep = np.stack([model.predict(i).scores for i in items])
    return ref, dep
