"""Classification: probabilities from a classifier's output (softmax only for logits, never twice), top-k
with labels, the test-time augmentation merge, and the doctor's checks of scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgeinfer.errors import ModelError
from edgeinfer.tasks import gates
from edgeinfer.tasks.base import Evidence, Findings, Task, draw_text, finding


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


KINDS = ("logits", "probabilities", "multilabel_logits", "multilabel_probabilities")


def _finish(spec: Any, outputs: Sequence[np.ndarray], prepared: Any, *, top_k: int = 5, **_: Any) -> list[Prediction]:
    return predictions(outputs[0], kind=spec.output.kind, labels=spec.labels, top_k=top_k)


def merge_views(spec: Any, views: np.ndarray, *, merge: str, top_k: int = 5) -> list[Prediction]:
    """Test-time augmentation: the raw outputs of V views of N images, (V, N, ...), merged into one
    prediction per image by the mean of probabilities, or of logits (then softmax) with ``merge="logits"``."""
    kind = spec.output.kind
    per_view = np.stack([class_scores(v) for v in views])
    if merge == "logits" and kind in ("logits", "multilabel_logits"):
        merged, merged_kind = per_view.mean(axis=0), kind
    else:
        merged = np.mean([to_probabilities(v, kind) for v in per_view], axis=0)
        merged_kind = "multilabel_probabilities" if kind.startswith("multilabel") else "probabilities"
    return predictions(merged, kind=merged_kind, labels=spec.labels, top_k=top_k)


def _draw(frame: np.ndarray, pred: Prediction, avoid: Sequence[Sequence[float]] = ()) -> np.ndarray:
    draw_text(frame, [f"{pred.label}  {pred.score:.2f}"])
    return frame


def _rows(pred: Prediction) -> list[dict[str, Any]]:
    return [{"index": pred.index, "label": pred.label, "score": pred.score, "top_k": pred.to_dict()["top_k"]}]


def _summary(pred: Prediction) -> str:
    return ", ".join(f"{label} {score:.3f}" for _, label, score in pred.top_k)


def _checks(spec: Any, evidence: Evidence, measured: dict[str, Any]) -> Findings:
    """Softmax applied twice or never, and outputs that ignore the input (collapse)."""
    if not evidence.outputs:
        return []
    scores = np.concatenate([class_scores(o[0]) for o in evidence.outputs]).astype(np.float64)
    kind = spec.output.kind
    out = []
    looks_prob = bool(np.all(scores >= -1e-6) and np.all(scores <= 1 + 1e-6)
                      and np.allclose(scores.sum(1), 1.0, atol=1e-3))
    if kind == "logits" and looks_prob and scores.shape[1] > 1:
        out.append(finding(
            "double_softmax", "error", "the spec says the output is logits but the model already outputs "
            "probabilities (every row sums to 1): softmax would be applied twice, flattening confidences.",
            "Re-export with output_kind='probabilities' (converters.export detects it by default)."))
    if kind == "probabilities" and not looks_prob:
        out.append(finding(
            "double_softmax", "error", "the spec says the output is probabilities but the rows do not sum to 1: "
            "these are logits and scores would be read without softmax.", "Re-export with output_kind='logits'."))
    probs = to_probabilities(scores.astype(np.float32), kind)
    n, k = probs.shape
    counts = np.bincount(probs.argmax(1), minlength=k)
    share = float(counts.max() / n)
    variation = float(probs.std(axis=0).max())
    measured["top1_share_of_most_common_class"] = round(share, 3)
    measured["largest_score_std_across_images"] = round(variation, 6)
    if n >= 2 and variation < 1e-3:
        out.append(finding(
            "collapse", "error", f"outputs barely change across {n} different images (largest per-class std "
            f"{variation:.1e}): the model ignores its input.",
            "Check the weights were loaded and trained (random-init or mis-exported models do this), and that "
            "BatchNorm running statistics are sane (mobilenet_v3 needs them recomputed after short training).",
            variation=variation))
    elif n >= 8 and k > 2 and share >= 0.9:
        out.append(finding(
            "collapse", "warning", f"one class ({int(counts.argmax())}) wins {share:.0%} of {n} images.",
            "If the images are varied, the model or its preprocessing is broken; compare with the training "
            "pipeline (edgeinfer check --reference-transform ...).", share=share))
    return out


def _confidence(spec: Any, outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Each image's top probability (the top-1 score a user sees)."""
    return to_probabilities(class_scores(outputs[0]), spec.output.kind).max(axis=1).astype(np.float64)


TASK = Task(
    "classification", Prediction, _finish, _draw, _rows, ("index", "label", "score", "top_k"), _summary, KINDS,
    kind_of=lambda raw: "probabilities" if looks_like_probabilities(raw) else "logits",
    selftest=lambda raw: class_scores(raw)[0], tta=merge_views, checks=_checks, gate=gates.classification,
    scores=lambda spec, raw: to_probabilities(class_scores(raw), spec.output.kind), confidence=_confidence,
    sample=lambda spec, outputs, result: {"probabilities": result.scores})
