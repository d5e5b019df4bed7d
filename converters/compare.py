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

from edgeinfer.errors import ImageError
from edgeinfer.images import image_files
from edgeinfer.postprocess import class_scores, to_probabilities


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

    def candidate(self, name: str) -> CandidateParity:
        return next(c for c in self.candidates if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgeinfer.parity/1", "model": self.model, "images": self.images,
                "output_kind": self.output_kind, "reference": "torch model on the user's transform",
                "candidates": [c.to_dict() for c in self.candidates]}


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


def compare(torch_model: Any, transform: Any, onnx_path: str | os.PathLike, images: Any, *,
            variants: Sequence[str | os.PathLike] = (), batch: int = 16, n_worst: int = 5,
            progress: bool = False) -> ParityReport:
    """Compare ``torch_model(transform(image))`` with the exported model and its deployment.

    ``images`` is a folder, or a list of paths, PIL images or RGB arrays. Images are loaded as the
    spec's loader did (PIL, ``convert('RGB')`` or ``'L'``). ``variants`` are further .onnx files (fp16,
    int8, optimised) deployed through edgeinfer the same way. ``progress`` shows a tqdm bar.
    """
    import onnxruntime as ort
    import torch

    import edgeinfer

    deployed = {"deployment": edgeinfer.load(onnx_path)}
    for v in variants:
        deployed[f"variant:{Path(v).name}"] = edgeinfer.load(v)
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
            onnx_out.append(session.run([spec.output.name], {spec.input.name: x.numpy()})[0])
            for key, model in deployed.items():
                for _, item in chunk:
                    raw, color = _raw_input(item)
                    dep[key].append(model.run(model.preprocessor.batch([raw], color=color)))
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    names = [n for n, _ in named]
    ref_raw = np.concatenate(ref)
    kind = spec.output.kind
    candidates = [_score("export", ref_raw, np.concatenate(onnx_out), kind, names, n_worst)]
    candidates += [_score(key, ref_raw, np.concatenate(v), kind, names, n_worst) for key, v in dep.items()]
    return ParityReport(model=str(onnx_path), images=len(named), output_kind=kind, candidates=tuple(candidates))
