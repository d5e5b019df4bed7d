"""Reading a classifier's output: probabilities (softmax only for logits, never twice), top-k, labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgeinfer.errors import ModelError


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (max subtracted), float32; the sum is accumulated in float64."""
    e = np.exp(x.astype(np.float32, copy=False) - np.max(x, axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True, dtype=np.float64)).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def to_probabilities(scores: np.ndarray, kind: str) -> np.ndarray:
    """(N, C) scores as probabilities: softmax for logits, sigmoid per class for multi-label logits."""
    if kind == "logits":
        return softmax(scores)
    if kind == "multilabel_logits":
        return sigmoid(scores)
    return scores.astype(np.float32, copy=False)


def class_scores(raw: np.ndarray) -> np.ndarray:
    """Flatten an output of shape (N, C) or (N, C, 1, 1) to (N, C)."""
    if raw.ndim >= 2 and all(d == 1 for d in raw.shape[2:]):
        return raw.reshape(raw.shape[0], raw.shape[1])
    raise ModelError(f"model output: expected shape (N, classes) or (N, classes, 1, 1), found {raw.shape}. "
                     "Only classification outputs are supported by this runtime.")


def looks_like_probabilities(raw: np.ndarray) -> bool:
    """Whether every row of a raw output is a probability distribution (the graph ends in softmax).

    Logits of a real model are never all in [0, 1] with rows summing to 1 within 1e-4; this is how an
    exported model's output kind is detected, so that softmax is never applied twice.
    """
    s = class_scores(raw).astype(np.float64)
    return bool(np.all(s >= -1e-6) and np.all(s <= 1 + 1e-6) and np.allclose(s.sum(axis=1), 1.0, atol=1e-4))


@dataclass(frozen=True)
class Prediction:
    """One image's result: probabilities over classes and the top-k (index, label, score)."""

    scores: np.ndarray
    top_k: tuple[tuple[int, str, float], ...]
    multilabel: bool = False
    threshold: float = 0.5
    labels: Sequence[str] | None = field(default=None, repr=False, compare=False)

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
        d: dict[str, Any] = {"top_k": [{"index": i, "label": lab, "score": s} for i, lab, s in self.top_k]}
        if self.multilabel:
            d["present"] = [{"index": i, "label": lab, "score": s} for i, lab, s in self.present()]
        return d

    def present(self) -> list[tuple[int, str, float]]:
        """Multi-label: every class whose probability reaches the threshold (sorted by score)."""
        idx = np.flatnonzero(self.scores >= self.threshold)
        idx = idx[np.argsort(-self.scores[idx], kind="stable")]
        return [(int(i), self.labels[i] if self.labels is not None else str(int(i)), float(self.scores[i]))
                for i in idx]


def predictions(raw: np.ndarray, *, kind: str, labels: Sequence[str] | None, top_k: int) -> list[Prediction]:
    """Turn a raw output batch into one :class:`Prediction` per image."""
    scores = class_scores(raw)
    probs = to_probabilities(scores, kind)
    k = max(1, min(int(top_k), probs.shape[1]))
    multilabel = kind.startswith("multilabel")
    out = []
    for row in probs:
        # top-k without sorting every class: everything at least the k-th largest score, ordered by
        # score, ties by class index (as a stable sort would)
        kth = np.partition(row, row.shape[0] - k)[row.shape[0] - k]
        cand = np.flatnonzero(row >= kth)
        order = cand[np.lexsort((cand, -row[cand]))][:k]
        top = tuple((int(i), labels[i] if labels is not None else str(int(i)), float(row[i])) for i in order)
        out.append(Prediction(scores=row, top_k=top, multilabel=multilabel, labels=labels))
    return out
