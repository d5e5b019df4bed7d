"""Embeddings: a model's feature vector for an image (a classifier's penultimate layer, a timm model with
``num_classes=0``, a CLIP-style image tower), with cosine similarity and files of vectors that keep their names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeinfer.errors import ImageError, ModelError
from edgeinfer.tasks import gates
from edgeinfer.tasks.base import Evidence, Findings, Task, draw_text, finding


def vectors(raw: np.ndarray, *, l2: bool) -> np.ndarray:
    """(N, D) float32 feature vectors from an output (N, D) or (N, D, 1, 1); L2-normalised when ``l2``."""
    if raw.ndim < 2 or any(d != 1 for d in raw.shape[2:]):
        raise ModelError(f"embedding output: expected shape (N, D) or (N, D, 1, 1), found {raw.shape}.")
    v = raw.reshape(raw.shape[0], raw.shape[1]).astype(np.float32, copy=False)
    if l2:
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.maximum(norm, np.float32(1e-12))  # torch.nn.functional.normalize's eps
    return v


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` (N, D) or (D,) with each row of ``b`` (M, D) or (D,): (N, M)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"cosine: vectors of {a.shape[1]} and {b.shape[1]} dimensions.")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


@dataclass(frozen=True, eq=False)
class Embedding:
    """One image's feature vector: ``vector`` (D,) float32, L2-normalised when ``normalized``."""

    vector: np.ndarray
    normalized: bool = False

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vector, dtype=np.float32).reshape(-1)
        v.flags.writeable = False
        object.__setattr__(self, "vector", v)

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])

    def similarity(self, other: "Embedding | np.ndarray") -> float:
        """Cosine similarity with another embedding or vector."""
        return float(cosine(self.vector, other.vector if isinstance(other, Embedding) else other)[0, 0])

    def to_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "normalized": self.normalized, "norm": round(float(np.linalg.norm(self.vector)), 6),
                "vector": [float(x) for x in self.vector]}

    def rows(self) -> list[dict[str, Any]]:
        return [{"dim": self.dim, "norm": round(float(np.linalg.norm(self.vector)), 6)}]

    def __repr__(self) -> str:
        return f"Embedding(dim={self.dim}, norm={np.linalg.norm(self.vector):.4f})"


def files_path(vectors_path: str | os.PathLike) -> Path:
    """The file list written beside a vectors file: ``vectors.npy`` -> ``vectors.files.txt``."""
    p = Path(vectors_path)
    return p.with_name(p.stem + ".files.txt")


def save(path: str | os.PathLike, names: Sequence[str], vecs: np.ndarray) -> Path:
    """Write ``vecs`` (N, D) to ``path`` (.npy) and the N names, one per line, beside it; each atomically."""
    path = Path(path)
    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or len(vecs) != len(names):
        raise ValueError(f"save: expected (N, D) vectors for {len(names)} names, found {vecs.shape}.")
    if any("\n" in n for n in names):
        raise ValueError("save: a name contains a newline; it cannot be listed one per line.")
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        np.save(fh, vecs)
    os.replace(tmp, path)
    listing, tmp = files_path(path), files_path(path).with_name(f".{files_path(path).name}.tmp")
    tmp.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    os.replace(tmp, listing)
    return path


def load(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """The names and vectors :func:`save` (or ``edgeinfer embed``) wrote."""
    path = Path(path)
    vecs = np.load(path, allow_pickle=False)
    listing = files_path(path)
    if not listing.is_file():
        raise ImageError(f"{path}: expected the file list {listing.name} beside it (written by edgeinfer embed).")
    names = listing.read_text(encoding="utf-8").splitlines()
    if len(names) != len(vecs):
        raise ImageError(f"{path}: {len(vecs)} vectors but {len(names)} names in {listing.name}; the files do not "
                         "belong together.")
    return names, vecs


# -- the task entry ---------------------------------------------------------------------------------------
KINDS = ("embedding", "embedding_l2")


def _finish(spec: Any, outputs: Sequence[np.ndarray], prepared: Any, **_: Any) -> list[Embedding]:
    l2 = spec.output.kind == "embedding_l2"
    return [Embedding(v, normalized=l2) for v in vectors(outputs[0], l2=l2)]


def _draw(frame: np.ndarray, emb: Embedding, avoid: Sequence[Sequence[float]] = ()) -> np.ndarray:
    draw_text(frame, [repr(emb)])
    return frame


def _kind_of(raw: np.ndarray) -> str:
    """A graph that ends in an L2 normalisation gives unit vectors on any input."""
    norms = np.linalg.norm(vectors(raw, l2=False).astype(np.float64), axis=1)
    return "embedding_l2" if np.allclose(norms, 1.0, atol=1e-4) else "embedding"


def _checks(spec: Any, evidence: Evidence, measured: dict[str, Any]) -> Findings:
    """Collapse: every image's vector points the same way, so the model cannot tell the images apart."""
    vecs = np.stack([e.vector for e, _ in evidence.results]).astype(np.float64)
    if len(vecs) < 3:
        return []
    sim = cosine(vecs, vecs)[np.triu_indices(len(vecs), k=1)]
    measured["embedding_min_cosine"] = round(float(sim.min()), 6)
    measured["embedding_mean_cosine"] = round(float(sim.mean()), 6)
    if float(sim.min()) > 0.995:
        return [finding(
            "embedding_collapse", "error", f"the vectors of {len(vecs)} different images are nearly parallel "
            f"(smallest cosine similarity {sim.min():.4f}): the model ignores its input.",
            "Check the weights were loaded and trained, that BatchNorm statistics are real (model.eval()), and "
            "that the preprocessing matches the training transform (edgeinfer check --reference-transform).",
            min_cosine=float(sim.min()))]
    return []


# the self-test records the vector itself, as the model gives it
TASK = Task("embedding", Embedding, _finish, _draw, Embedding.rows, ("dim", "norm"), repr, KINDS, kind_of=_kind_of,
            selftest=lambda raw: vectors(raw, l2=False)[0], checks=_checks, gate=gates.embedding,
            sample=lambda spec, outputs, result: {"vector": result.vector if outputs is None
                                                  else vectors(outputs[0], l2=False)[0]})
