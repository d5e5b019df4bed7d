"""Verification gates: does a candidate's output match the reference closely enough, judged as each task's user sees it?

A gate takes the reference (the training framework's output: torch through the user's transform) and a
candidate (the exported graph, a float16 or int8 variant, another engine) on the same images and returns
:class:`Verdict` ``(passed, figures)``. Tolerances follow the output's own scale, so a correct export is never
refused because its numbers are large: probabilities are bounded (an absolute tolerance is a relative one),
logits and coordinates are compared relative to their magnitude, vectors by their angle. numpy only, so the
runtime, the converters and the variant builders share one judgement.

``reference`` and ``candidate`` are sequences with one entry per image, each a mapping of the fields
:data:`FIELDS` names for the task (plain numpy arrays; ``outputs`` is a sequence of them).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

Sample = Mapping[str, Any]


class Verdict(NamedTuple):
    """A gate's answer: whether the candidate passed, and the figures it was judged on (JSON-ready)."""

    passed: bool
    figures: dict[str, Any]


def _pairs(reference: Sequence[Sample], candidate: Sequence[Sample]) -> list[tuple[Sample, Sample]]:
    if len(reference) != len(candidate) or not len(reference):
        raise ValueError(f"gate: expected the same number of images (at least one) on both sides, found "
                         f"{len(reference)} and {len(candidate)}.")
    return list(zip(reference, candidate))


def _f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def classification(reference: Sequence[Sample], candidate: Sequence[Sample], *, atol: float = 1e-3) -> Verdict:
    """Probabilities within ``atol`` and the same top-1 class.

    Fields: ``probabilities`` (C,). Probabilities lie in [0, 1] whatever the logits' scale, so the absolute
    ``atol`` is already a relative one. Where the reference's top two classes are within ``atol`` of each
    other, either order is within the tolerance allowed on the probabilities themselves: such a tie may flip
    without failing the gate (it is counted in ``top1_ties``).
    """
    pairs = _pairs(reference, candidate)
    ref = np.stack([_f64(r["probabilities"]).reshape(-1) for r, _ in pairs])
    got = np.stack([_f64(c["probabilities"]).reshape(-1) for _, c in pairs])
    if ref.shape != got.shape:
        return Verdict(False, {"images": len(pairs), "error": f"shapes differ: {ref.shape} and {got.shape}"})
    diff = float(np.max(np.abs(ref - got)))
    ranked = np.sort(ref, axis=1)
    margin = ranked[:, -1] - ranked[:, -2] if ref.shape[1] > 1 else np.full(len(ref), np.inf)
    flipped = ref.argmax(1) != got.argmax(1)
    decided = margin > atol
    wrong = int(np.sum(flipped & decided))
    return Verdict(diff <= atol and wrong == 0, {
        "images": len(pairs), "max_abs_diff": diff, "atol": atol,
        "top1_agreement": float(np.mean(~flipped)), "top1_ties": int(np.sum(flipped & ~decided)),
        "top1_disagreements": wrong})


def semantic_segmentation(reference: Sequence[Sample], candidate: Sequence[Sample], *, atol: float = 1e-3,
                          min_agreement: float = 0.999) -> Verdict:
    """Class maps equal on at least ``min_agreement`` of each image's pixels, and logits within
    ``atol * max(1, max|logit|)`` of the reference (per image: the tolerance grows with the logits' magnitude).

    Fields: ``logits`` (C, h, w) at the model's resolution, ``class_map`` (H, W) in the frame. Without logits on
    both sides (another tool's pipeline gives class maps only) the class maps alone decide.
    """
    pairs = _pairs(reference, candidate)
    worst_abs = worst_rel = scale_max = 0.0
    agreement: list[float] = []
    for r, c in pairs:
        both = "logits" in r and "logits" in c
        ref, got = (_f64(r["logits"]), _f64(c["logits"])) if both else (np.zeros(1), np.zeros(1))
        ref_map, got_map = np.asarray(r["class_map"]), np.asarray(c["class_map"])
        if ref.shape != got.shape or ref_map.shape != got_map.shape:
            return Verdict(False, {"images": len(pairs), "error": f"shapes differ: logits {ref.shape} and "
                                   f"{got.shape}, class maps {ref_map.shape} and {got_map.shape}"})
        scale = max(1.0, float(np.max(np.abs(ref))))
        diff = float(np.max(np.abs(ref - got)))
        worst_abs, worst_rel, scale_max = max(worst_abs, diff), max(worst_rel, diff / scale), max(scale_max, scale)
        agreement.append(float(np.mean(ref_map == got_map)))
    return Verdict(worst_rel <= atol and min(agreement) >= min_agreement, {
        "images": len(pairs), "logits_max_abs_diff": worst_abs, "logits_max_abs": scale_max,
        "logits_relative_diff": worst_rel, "atol": atol, "pixel_agreement": agreement,
        "min_pixel_agreement": min(agreement), "min_agreement": min_agreement})


def _match_boxes(ref: np.ndarray, got: np.ndarray, ref_cls: np.ndarray, got_cls: np.ndarray) -> float:
    """The largest coordinate difference after pairing each reference box with the nearest unused candidate box
    of its class (greedy, in the reference's order); inf when a box finds no partner."""
    cost = np.max(np.abs(ref[:, None, :] - got[None, :, :]), axis=2)
    cost[ref_cls[:, None] != got_cls[None, :]] = np.inf
    worst = 0.0
    free = np.ones(len(got), bool)
    for row in cost:  # near-equal confidences may swap two boxes' order; the pairing does not care
        j = int(np.argmin(np.where(free, row, np.inf)))
        if not free[j] or not np.isfinite(row[j]):
            return float("inf")
        free[j] = False
        worst = max(worst, float(row[j]))
    return worst


def detection(reference: Sequence[Sample], candidate: Sequence[Sample], *, atol: float = 1e-3,
              box_atol: float = 0.5) -> Verdict:
    """The same number of detections per image, boxes within ``box_atol`` pixels of the frame (paired by class
    and position), and raw outputs within ``atol * max(1, |value|)`` element by element.

    Fields: ``outputs`` (the model's raw outputs, in order), ``xyxy`` (N, 4) in frame pixels, ``class_id`` (N,).
    Element by element, because one detector output mixes pixel coordinates (hundreds) with scores (below 1):
    one scale for the whole tensor would let the scores drift by the coordinates' tolerance. Another tool's
    pipeline has no raw outputs: then ``confidence`` (N,) on both sides, sorted, is held to ``atol`` instead.
    """
    pairs = _pairs(reference, candidate)
    worst_abs = worst_rel = worst_box = 0.0
    ref_counts, got_counts = [], []
    for r, c in pairs:
        if "outputs" not in r or "outputs" not in c:
            a = np.sort(_f64(r.get("confidence", [])).reshape(-1))
            b = np.sort(_f64(c.get("confidence", [])).reshape(-1))
            if a.shape == b.shape and a.size:
                worst_abs = max(worst_abs, float(np.abs(a - b).max()))
                worst_rel = max(worst_rel, float(np.abs(a - b).max()))
        elif len(r["outputs"]) != len(c["outputs"]):
            return Verdict(False, {"images": len(pairs),
                                   "error": f"{len(r['outputs'])} and {len(c['outputs'])} outputs"})
        for a, b in zip(r.get("outputs", ()), c.get("outputs", ())):
            a, b = _f64(a), _f64(b)
            if a.shape != b.shape:
                return Verdict(False, {"images": len(pairs), "error": f"output shapes differ: {a.shape} and {b.shape}"})
            if a.size:
                d = np.abs(a - b)
                worst_abs = max(worst_abs, float(d.max()))
                worst_rel = max(worst_rel, float(np.max(d / np.maximum(1.0, np.abs(a)))))
        ref_xyxy, got_xyxy = _f64(r["xyxy"]).reshape(-1, 4), _f64(c["xyxy"]).reshape(-1, 4)
        ref_counts.append(len(ref_xyxy))
        got_counts.append(len(got_xyxy))
        if len(ref_xyxy) == len(got_xyxy) and len(ref_xyxy):
            worst_box = max(worst_box, _match_boxes(ref_xyxy, got_xyxy, np.asarray(r["class_id"]).reshape(-1),
                                                    np.asarray(c["class_id"]).reshape(-1)))
    same_counts = ref_counts == got_counts
    return Verdict(same_counts and worst_box <= box_atol and worst_rel <= atol, {
        "images": len(pairs), "outputs_max_abs_diff": worst_abs, "outputs_relative_diff": worst_rel, "atol": atol,
        "detections": ref_counts, "candidate_detections": got_counts, "box_max_abs_diff": worst_box,
        "box_atol": box_atol})


def embedding(reference: Sequence[Sample], candidate: Sequence[Sample], *, min_cosine: float = 0.9999) -> Verdict:
    """Each candidate vector's cosine similarity with the reference's at least ``min_cosine`` (the angle is what
    retrieval compares; it does not depend on the vectors' length). Fields: ``vector`` (D,)."""
    pairs = _pairs(reference, candidate)
    cosines, worst = [], 0.0
    for r, c in pairs:
        a, b = _f64(r["vector"]).reshape(-1), _f64(c["vector"]).reshape(-1)
        if a.shape != b.shape:
            return Verdict(False, {"images": len(pairs), "error": f"vectors of {a.size} and {b.size} dimensions"})
        worst = max(worst, float(np.max(np.abs(a - b))))
        cosines.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-24)))
    return Verdict(min(cosines) >= min_cosine, {"images": len(pairs), "cosine": cosines, "min_cosine": min(cosines),
                                                "required": min_cosine, "max_abs_diff": worst})
