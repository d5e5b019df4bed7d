"""Contenders timed side by side, and the comparison a detector benchmark makes before it times anything.

Every round runs each contender once, in a new shuffled order: on a shared machine (2 cores, other jobs) the noise
then hits all contenders alike, and a ratio taken within a round cancels most of it. Figures are medians over
rounds with their quartiles (the spread says how noisy the run was); ratios are medians of the within-round ratios.
Used by ``engines.py`` and ``detector_end_to_end.py``.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np


@dataclass
class Timings:
    """Per contender: ms of each round's call, and the stage figures (ms) the call returned, if it returned any."""

    ms: dict[str, list[float]]
    stages: dict[str, list[Mapping[str, float]]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.ms[name])

    def spread(self, name: str) -> dict[str, float]:
        """Median and quartiles (ms) of ``name``'s calls."""
        q1, med, q3 = np.percentile(self.ms[name], [25, 50, 75])
        return {"median": float(med), "q1": float(q1), "q3": float(q3)}

    def stage_medians(self, name: str) -> dict[str, float]:
        """Median ms of each stage ``name`` reported (e.g. pre / graph / post)."""
        rows = self.stages.get(name) or []
        return {k: float(statistics.median(r[k] for r in rows)) for k in (rows[0] if rows else {})}

    def ratio(self, slower: str, faster: str) -> dict[str, float]:
        """``slower``'s time over ``faster``'s within each round (> 1: ``faster`` is faster): median and quartiles."""
        r = [a / b for a, b in zip(self.ms[slower], self.ms[faster])]
        q1, med, q3 = np.percentile(r, [25, 50, 75])
        return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def run(contenders: Mapping[str, Callable[[int], Any]], rounds: int, *,
        before: Mapping[str, Callable[[], None]] | None = None) -> Timings:
    """Time ``rounds`` shuffled rounds. A contender is called with the round's index; when it returns a mapping,
    that is kept as its stage figures. ``before[name]`` runs untimed just before ``name``'s call (e.g. setting the
    thread count of libraries whose pool is process-wide)."""
    out = Timings({k: [] for k in contenders}, {k: [] for k in contenders})
    order = list(contenders)
    for i in range(rounds):
        random.shuffle(order)
        for name in order:
            if before and name in before:
                before[name]()
            t0 = time.perf_counter()
            got = contenders[name](i)
            out.ms[name].append((time.perf_counter() - t0) * 1e3)
            if isinstance(got, Mapping):
                out.stages[name].append(got)
    return out


def boxes_delta(xyxy: np.ndarray, cls: np.ndarray, ref_xyxy: np.ndarray, ref_cls: np.ndarray) -> float:
    """The worst coordinate difference (px) between two detectors' boxes, each box matched to the nearest of the
    same class in the reference (the order of equal-score boxes may differ); ``inf`` when the counts differ."""
    xyxy, ref_xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4), np.asarray(ref_xyxy, np.float64).reshape(-1, 4)
    cls, ref_cls = np.asarray(cls).reshape(-1), np.asarray(ref_cls).reshape(-1)
    if len(xyxy) != len(ref_xyxy):
        return float("inf")
    worst = 0.0
    for box, c in zip(xyxy, cls):
        same = ref_xyxy[ref_cls == c]
        if not len(same):
            return float("inf")
        worst = max(worst, float(np.abs(same - box).max(axis=1).min()))
    return worst
