"""Reading outputs: top-k order and probabilities."""

from __future__ import annotations

import numpy as np

from edgeinfer.tasks.classification import predictions


def test_top_k_orders_by_score_then_class_index_like_a_stable_sort():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, k = int(rng.integers(1, 60)), int(rng.integers(1, 8))
        raw = rng.integers(0, 4, size=(2, n)).astype(np.float32)  # many ties
        for pred in predictions(raw, kind="logits", labels=None, top_k=k):
            assert [i for i, _, _ in pred.top_k] == list(np.argsort(-pred.scores, kind="stable")[:k])
            assert abs(float(pred.scores.sum()) - 1.0) < 1e-5
