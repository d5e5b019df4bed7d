"""Reading a classifier's output: probabilities (softmax only for logits, never twice), top-k, labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgeinfer.errors import ModelError


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (max subtracted), float32; the sum is accumulated in float64."""
    e = np.exp(x.astype(np.float32, copy=False) - np.max(x, axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True, dtype=np.float64)).astype(np.float32)


def class_scores(raw: np.ndarray) -> np.ndarray:
    """Flatten an output of shape (N, C) or (N, C, 1, 1) to (N, C)."""
    if raw.ndim >= 2 and all(d == 1 for d in raw.shape[2:]):
        return raw.reshape(raw.shape[0], raw.shape[1])
    raise ModelError(f"model output: expected shape (N, classes) or (N, classes, 1, 1), found {raw.shape}. "
                     "Only classification outputs are supported by this runtime.")


@dataclass(frozen=True)
class Prediction:
    """One image's result: probabilities over classes and the top-k (index, label, score)."""

    scores: np.ndarray
    top_k: tuple[tuple[int, str, float], ...]

    @property
    def index(self) -> int:
        return self.top_k[0][0]

    @property
    def label(self) -> str:
        return self.top_k[0][1]

    @property
    def score(self) -> float:
        return self.top_k[0][2]

    def to_dict(self) -> dict[str, Any]:
        return {"top_k": [{"index": i, "label": lab, "score": s} for i, lab, s in self.top_k]}


def predictions(raw: np.ndarray, *, kind: str, labels: Sequence[str] | None, top_k: int) -> list[Prediction]:
    """Turn a raw output batch into one :class:`Prediction` per image."""
    scores = class_scores(raw)
    probs = softmax(scores) if kind == "logits" else scores.astype(np.float32, copy=False)
    k = max(1, min(int(top_k), probs.shape[1]))
    out = []
    for row in probs:
        # top-k without sorting every class: everything at least the k-th largest score, ordered by
        # score, ties by class index (as a stable sort would)
        kth = np.partition(row, row.shape[0] - k)[row.shape[0] - k]
        cand = np.flatnonzero(row >= kth)
        order = cand[np.lexsort((cand, -row[cand]))][:k]
        top = tuple((int(i), labels[i] if labels is not None else str(int(i)), float(row[i])) for i in order)
        out.append(Prediction(scores=row, top_k=top))
    return out
