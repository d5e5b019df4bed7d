"""Parity with the original: the user's torch model fed by the user's own transform is the reference.

Candidates: the ONNX model fed the same tensors (*export* parity: did the graph survive the export?)
and the edgeinfer runtime fed the raw images (*deployment* parity: what the device will really do),
plus any optimised variant (another .onnx file) deployed the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from edgeinfer.pipeline.contract import feeds
from edgeinfer.errors import ImageError
from edgeinfer.pipeline.images import image_files
from edgeinfer.tasks.classification import class_scores, to_probabilities
from edgeinfer.tools.reports import SCHEMAS


@dataclass(frozen=True)
class CandidateParity:
    """How one candidate's outputs compare with the reference, over all images."""

    name: str
    max_abs_diff: float          # probabilities
    mean_abs_diff: float         # probabilities
    max_abs_diff_raw: float      # raw model outputs (logits or probabilities as exported)
    top1_agreement: float
    top5_agreement: float        # share of images whose top-5 sets are equal
    worst: tuple[tuple[str, float], ...]  # (image, max |probability difference|), worst first

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "max_abs_diff_raw": self.max_abs_diff_raw, "top1_agreement": self.top1_agreement,
                "top5_agreement": self.top5_agreement,
                "worst": [{"image": n, "max_abs_diff": d} for n, d in self.worst]}


@dataclass(frozen=True)
class ParityReport:
    """The reference and every candidate's agreement with it."""

    model: str
    images: int
    output_kind: str
    candidates: tuple[CandidateParity, ...]
    device: str = "cpu"  # the profile the deployed candidates ran with
    environment: dict[str, Any] | None = None  # edgeinfer.tools.bench.environment() of the deployment's session

    def candidate(self, name: str) -> CandidateParity:
        return next(c for c in self.candidates if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMAS["parity"], "model": self.model, "device": self.device, "images": self.images,
                "output_kind": self.output_kind, "reference": "torch model on the user's transform",
                "candidates": [c.to_dict() for c in self.candidates], "environment": self.environment}


def _named_images(images: Any) -> list[tuple[str, Any]]:
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        files = image_files(images)
        if not files:
            raise ImageError(f"{images}: expected a folder with images, found none.")
        return [(str(f), f) for f in files]
    return [(str(im) if isinstance(im, (str, os.PathLike)) else f"image{i}", im) for i, im in enumerate(images)]


def load_like_training(item: Any, mode: str) -> Any:
    """An image as the training loader handed it to the transform: PIL, ``convert(mode)`` ("RGB"/"L")."""
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        with Image.open(item) as f:
            return f.convert(mode)
    if isinstance(item, np.ndarray):
        return Image.fromarray(item).convert(mode)
    return item.convert(mode)


def _raw_input(item: Any) -> tuple[Any, str]:
    """What the device gets: the file itself, or the pixels (RGB) for in-memory images."""
    if isinstance(item, (str, os.PathLike)):
        return Path(item), "bgr"
    return np.asarray(item), "rgb"


def _score(name: str, ref_raw: np.ndarray, got_raw: np.ndarray, kind: str, names: Sequence[str],
           n_worst: int) -> CandidateParity:
    to_p = lambda r: to_probabilities(class_scores(r), kind)  # noqa: E731
    ref, got = to_p(ref_raw), to_p(got_raw)
    diff = np.abs(ref.astype(np.float64) - got)
    per_image = diff.max(axis=1)
    k = min(5, ref.shape[1])
    top5 = [set(np.argsort(-a)[:k]) == set(np.argsort(-b)[:k]) for a, b in zip(ref, got)]
    order = np.argsort(-per_image)[:n_worst]
    return CandidateParity(
        name=name, max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
        max_abs_diff_raw=float(np.max(np.abs(class_scores(ref_raw).astype(np.float64) - class_scores(got_raw)))),
        top1_agreement=float(np.mean(ref.argmax(1) == got.argmax(1))), top5_agreement=float(np.mean(top5)),
        worst=tuple((names[i], float(per_image[i])) for i in order))


@dataclass(frozen=True)
class Outputs:
    """The raw outputs :func:`compare` scores, image by image: the reference's and each candidate's."""

    names: tuple[str, ...]
    kind: str  # the spec's output kind
    reference: np.ndarray
    candidates: dict[str, np.ndarray]  # "export", "deployment", "variant:<file name>"
    deployment: Any  # the edgeinfer Model the deployment candidate ran on

    def parity(self, model: str | os.PathLike, *, n_worst: int = 5) -> ParityReport:
        """Score every candidate against the reference; ``model`` is the path the report names."""
        from edgeinfer.tools.bench import environment

        dep = self.deployment
        return ParityReport(model=str(model), images=len(self.names), output_kind=self.kind,
                            candidates=tuple(_score(key, self.reference, raw, self.kind, self.names, n_worst)
                                             for key, raw in self.candidates.items()),
                            device=dep.device, environment=environment(dep.session, dep.requested_providers, None))


def compare(torch_model: Any, transform: Any, onnx_path: str | os.PathLike, images: Any, *,
            variants: Sequence[str | os.PathLike] = (), batch: int = 16, n_worst: int = 5,
            progress: bool = False, device: str = "cpu") -> ParityReport:
    """Compare ``torch_model(transform(image))`` with the exported model and its deployment.

    ``images`` is a folder, or a list of paths, PIL images or RGB arrays. Images are loaded as the
    spec's loader did (PIL, ``convert('RGB')`` or ``'L'``). ``variants`` are further .onnx files (fp16,
    int8, optimised) deployed through edgeinfer the same way. ``progress`` shows a tqdm bar. ``device`` is
    the profile the deployed candidates load with (its providers, threads, preprocessing mode), as on the device.
    """
    return collect(torch_model, transform, onnx_path, images, variants=variants, batch=batch, progress=progress,
                   device=device).parity(onnx_path, n_worst=n_worst)


def collect(torch_model: Any, transform: Any, onnx_path: str | os.PathLike, images: Any, *,
            variants: Sequence[str | os.PathLike] = (), batch: int = 16, progress: bool = False,
            device: str = "cpu") -> Outputs:
    """The raw outputs behind :func:`compare` (same arguments), for callers that judge them themselves."""
    import onnxruntime as ort
    import torch

    import edgeinfer

    deployed = {"deployment": edgeinfer.load(onnx_path, device=device)}
    for v in variants:
        deployed[f"variant:{Path(v).name}"] = edgeinfer.load(v, device=device)
    spec = deployed["deployment"].spec
    mode = "RGB" if spec.decode.color == "rgb" else "L"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    named = _named_images(images)
    if not named:
        raise ImageError("compare: expected at least one image, found none.")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(named), desc="parity", unit="image")
    torch_model.eval()
    ref, onnx_out = [], []
    dep: dict[str, list[np.ndarray]] = {k: [] for k in deployed}
    try:
        for start in range(0, len(named), batch):
            chunk = named[start:start + batch]
            with torch.no_grad():
                x = torch.stack([transform(load_like_training(item, mode)) for _, item in chunk]).float()
                ref.append(torch_model(x).detach().cpu().numpy())
            onnx_out.append(session.run([spec.output.name], feeds(spec.input, x.numpy().astype(np.float32), None))[0])
            for key, model in deployed.items():
                for _, item in chunk:
                    raw, color = _raw_input(item)
                    dep[key].append(model.run(model.preprocessor.batch([raw], color=color)))
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    candidates = {"export": np.concatenate(onnx_out), **{key: np.concatenate(v) for key, v in dep.items()}}
    return Outputs(names=tuple(n for n, _ in named), kind=spec.output.kind, reference=np.concatenate(ref),
                   candidates=candidates, deployment=deployed["deployment"])


class TorchReference:
    """Agreement with training, computed on the workers of a distributed run (``edgeinfer predict --engine ray
    --reference``): the torch model fed by its own transform, next to what the device pipeline predicted.

    Plain names travel to the workers (the architecture, a weights file, the transform's ``module:attribute``),
    never a live module: each worker builds the torch model once, on its first batch.
    """

    COLUMNS = ("reference_top1", "top1_agrees", "max_abs_diff")

    def __init__(self, torch_model: str, *, weights: str | os.PathLike | None = None, num_classes: int | None = None,
                 transform: str | None = None) -> None:
        self.torch_model = torch_model
        self.weights = None if weights is None else str(weights)
        self.num_classes = num_classes
        self.transform = transform
        self._built: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_built": None}

    def _build(self) -> tuple[Any, Any]:
        if self._built is None:
            from converters import zoo

            model, transform = zoo.build(self.torch_model, num_classes=self.num_classes, weights=self.weights)
            if self.transform:
                transform = zoo.import_attr(self.transform)
            model.eval()
            self._built = (model, transform)
        return self._built

    def compare(self, model: Any, paths: Sequence[str], results: Sequence[Any]) -> list[dict[str, Any]]:
        """Per image: the reference's top-1 class, whether the deployed top-1 agrees, max |probability diff|."""
        import torch

        scores = [getattr(r, "scores", None) for r in results]
        if any(s is None for s in scores):
            raise ImageError(f"--reference compares class scores; {model.path} gives {type(results[0]).__name__} "
                             "results. Use it with a classifier.")
        torch_model, transform = self._build()
        mode = "RGB" if model.spec.decode.color == "rgb" else "L"
        with torch.no_grad():
            x = torch.stack([transform(load_like_training(p, mode)) for p in paths]).float()
            raw = torch_model(x).detach().cpu().numpy()
        ref = to_probabilities(class_scores(raw), model.spec.output.kind).astype(np.float64)
        got = np.stack(scores).astype(np.float64)
        return [{"reference_top1": int(r.argmax()), "top1_agrees": bool(r.argmax() == g.argmax()),
                 "max_abs_diff": float(np.max(np.abs(r - g)))} for r, g in zip(ref, got)]

    def summary(self, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Agreement over every image of a results file (one entry per image; failed images are not counted)."""
        per_image: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row.get("top1_agrees") is not None:
                per_image.setdefault(row["image"], row)
        if not per_image:
            return {"reference": self.torch_model, "images": 0, "top1_agreement": None, "max_abs_diff": None,
                    "mean_max_abs_diff": None}
        diffs = np.asarray([r["max_abs_diff"] for r in per_image.values()], np.float64)
        return {"reference": self.torch_model, "images": len(per_image),
                "top1_agreement": float(np.mean([bool(r["top1_agrees"]) for r in per_image.values()])),
                "max_abs_diff": float(diffs.max()), "mean_max_abs_diff": float(diffs.mean())}
