"""The task table: what each task does after the model -- like the op table, each task exists once.

A task owns how its outputs become results (its decoders), its result type, how a result is drawn on a
frame and how it becomes CSV/JSONL rows. The model, the stream and the CLI ask this table; none of them
keeps its own ``if task == ...``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from edgeinfer.tasks import decoders as detect
from edgeinfer.pipeline import ops
from edgeinfer.tasks import classification as postprocess
from edgeinfer.tasks.detections import Detections
from edgeinfer.tasks.embedding import Embedding, vectors
from edgeinfer.tasks.segmentation import Segmentation, class_map, frame_to_logits
from edgeinfer.errors import ModelError, SpecError
from edgeinfer.tasks.classification import Prediction
from edgeinfer.spec import TASKS, Spec, Step

Result = Any  # Prediction | Detections | Segmentation


@dataclass(frozen=True)
class Task:
    """One task: the outputs it reads, how they become results, how results are drawn and tabulated."""

    name: str
    result: type
    outputs: Callable[[Spec], list[str]]
    # (spec, outputs of a batch, original (h, w) per image, input (h, w), options) -> one result per image
    finish: Callable[..., list[Result]]
    draw: Callable[[np.ndarray, Result], np.ndarray]
    rows: Callable[[Result], list[dict[str, Any]]]
    columns: tuple[str, ...]  # the keys of its rows, in CSV order
    summary: Callable[[Result], str]  # one line for a person
    # raw output of the self-test image -> the vector the spec records (None: the task has no self-test)
    selftest: Callable[[np.ndarray], np.ndarray] | None = None
    tta: bool = False  # whether predict's test-time augmentation applies
    # result -> (H, W) label map to save as a mask image (None: the task has no masks)
    mask: Callable[[Result], np.ndarray] | None = None
    # the doctor's checks of results on real images: (spec, [(result, (h, w))]) -> findings as dicts with
    # code, severity, message, fix, details (classifiers have their own checks on raw scores)
    checks: Callable[[Spec, list[tuple[Result, tuple[int, int]]]], list[dict[str, Any]]] | None = None


# -- classification ----------------------------------------------------------------------------------
def _classify(spec: Spec, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], input_hw: Any, *,
              top_k: int = 5, **_: Any) -> list[Prediction]:
    return postprocess.predictions(outputs[0], kind=spec.output.kind, labels=spec.labels, top_k=top_k)


def draw_text(out: np.ndarray, lines: Sequence[str], origin: tuple[int, int] = (10, 30), color=(255, 255, 255)) -> None:
    """Outlined text (black under the colour) that reads on any background, scaled to the frame's width."""
    scale = max(0.5, out.shape[1] / 1280)
    for i, text in enumerate(lines):
        x, y = origin[0], int(origin[1] + 32 * i * scale)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (0, 0, 0), int(4 * scale), cv2.LINE_AA)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, color, int(2 * scale), cv2.LINE_AA)


def _draw_prediction(frame: np.ndarray, pred: Prediction) -> np.ndarray:
    draw_text(frame, [f"{pred.label}  {pred.score:.2f}"])
    return frame


def _prediction_rows(pred: Prediction) -> list[dict[str, Any]]:
    return [{"index": pred.index, "label": pred.label, "score": pred.score, "top_k": pred.to_dict()["top_k"]}]


def _prediction_summary(pred: Prediction) -> str:
    return ", ".join(f"{label} {score:.3f}" for _, label, score in pred.top_k)


def _detections_summary(det: Detections) -> str:
    if not len(det):
        return "no detections"
    shown = 8
    items = [f"{name} {c:.2f} [{', '.join(f'{v:.0f}' for v in box)}]"
             for name, c, box in zip(det.class_name[:shown], det.confidence, det.xyxy)]
    more = f"; ... {len(det) - shown} more" if len(det) > shown else ""
    return f"{len(det)} detection{'s' * (len(det) != 1)}: " + "; ".join(items) + more


# -- detection, pose, oriented boxes -------------------------------------------------------------------
def _detect_outputs(spec: Spec) -> list[str]:
    return list(spec.postprocess.outputs)


def _detect(spec: Spec, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], input_hw: tuple[int, int],
            *, conf: float | None = None, iou: float | None = None, max_det: int | None = None,
            retina_masks: bool | None = None, **_: Any) -> list[Detections]:
    post = spec.postprocess
    changes = {k: v for k, v in (("conf", conf), ("iou", iou), ("max_det", max_det), ("retina_masks", retina_masks))
               if v is not None}
    if changes:
        post = dataclasses.replace(post, **changes)
        post.validate(spec.task)
    nc = len(spec.labels) if spec.labels is not None else 0
    candidates = detect.DECODERS[post.decoder](outputs, post, spec.task, nc)
    steps = [(s.op, s.params) for s in spec.steps]
    protos = outputs[1] if spec.task == "segment" else [None] * len(candidates)
    return [detect.to_original(c, ops.placements(steps, *hw), hw, task=spec.task, post=post, labels=spec.labels,
                               protos=pr, input_hw=input_hw)
            for c, hw, pr in zip(candidates, sizes, protos)]


PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]


def _draw_detections(frame: np.ndarray, det: Detections) -> np.ndarray:
    thick = max(2, round(frame.shape[1] / 400))
    for i, name in enumerate(det.class_name):
        color = PALETTE[int(det.class_id[i]) % len(PALETTE)]
        if det.xywhr is not None:
            cv2.polylines(frame, [np.round(det.xyxyxyxy[i]).astype(np.int32)], True, color, thick, cv2.LINE_AA)
        else:
            x1, y1, x2, y2 = (int(round(float(v))) for v in det.xyxy[i])
            cv2.rectangle(frame, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        if det.mask is not None:  # the mask tinted in, half transparent, and outlined
            region = det.mask[i]
            frame[region] = (frame[region] * 0.5 + np.asarray(color, np.float32) * 0.5).astype(np.uint8)
            outlines, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.polylines(frame, outlines, True, color, max(1, thick // 2), cv2.LINE_AA)
        if det.keypoints is not None:
            for kp in det.keypoints[i]:
                if kp.shape[0] < 3 or kp[2] >= 0.5:
                    cv2.circle(frame, (int(round(float(kp[0]))), int(round(float(kp[1])))), 2 * thick + 1, color, -1,
                               cv2.LINE_AA)
        x, y = (int(v) for v in det.xyxy[i, :2])
        draw_text(frame, [f"{name} {det.confidence[i]:.2f}"], origin=(max(x, 0), max(y - 6, 14)), color=color)
    return frame


def batch_spec(spec: Spec, images_hw: Sequence[tuple[int, int]]) -> Spec:
    """Ultralytics' rule for a batch: a minimal stride-aligned letterbox (``auto``) only when every image has
    the same size; otherwise the full square, so the batch stacks."""
    if len(set(images_hw)) <= 1:
        return spec
    steps = tuple(Step(s.op, {**s.params, "auto": False}) if s.op == "letterbox" else s for s in spec.steps)
    return dataclasses.replace(spec, steps=steps)


def _finding(code: str, severity: str, message: str, fix: str, **details: Any) -> dict[str, Any]:
    return {"code": code, "severity": severity, "message": message, "fix": fix, "details": details}


def _detection_checks(spec: Spec, results: list[tuple[Detections, tuple[int, int]]]) -> list[dict[str, Any]]:
    post = spec.postprocess
    boxes = sum(len(d) for d, _ in results)
    if boxes == 0:
        return [_finding(
            "boxes_empty", "warning", f"no detection on any of {len(results)} images (confidence threshold "
            f"{post.conf}).", "If the images show the model's classes, the preprocessing or the decoder is wrong "
            "(compare with the training tool's predictor), or the threshold is too high for these images.",
            conf=post.conf, detections=0)]
    out = []
    edge = 0
    for det, (h, w) in results:
        x1, y1, x2, y2 = det.xyxy.T
        tol = 0.5
        edge += int(np.sum((x1 <= tol) & (y1 <= tol) | (x2 >= w - tol) & (y2 >= h - tol)
                           | ((x2 - x1) >= w - tol) & ((y2 - y1) >= h - tol)))
    if boxes >= 3 and edge == boxes:
        out.append(_finding(
            "boxes_clipped", "error", f"all {boxes} boxes run into a corner of the frame or cover it whole: the "
            "coordinates are not in the unit the decoder assumes (normalised vs pixels) or not mapped back "
            "through the letterbox.", "Check the spec's postprocess decoder against the model's outputs (edgeinfer "
            "inspect shows both) and re-attach the spec.", boxes=boxes, boxes_at_frame_corners=edge))
    masked = [(det, hw) for det, hw in results if det.mask is not None and len(det)]
    if masked:  # each mask should lie inside its own box (the tool crops it there): the share outside says
        inside, total = 0, 0
        for det, _ in masked:
            for m, (x1, y1, x2, y2) in zip(det.mask, det.xyxy):
                area = int(m.sum())
                if area:
                    r0, r1 = max(int(np.floor(y1)) - 2, 0), int(np.ceil(y2)) + 2
                    c0, c1 = max(int(np.floor(x1)) - 2, 0), int(np.ceil(x2)) + 2
                    inside += int(m[r0:r1, c0:c1].sum())
                    total += area
        share = inside / total if total else 1.0
        if share < 0.9:
            out.append(_finding(
                "masks_misaligned", "error", f"only {share:.0%} of the mask pixels lie inside their own boxes: the "
                "masks are not mapped back to the frame the way the boxes are (a letterbox window not cut out, "
                "or the prototypes read at the wrong scale).", "Use the spec's segment decoder (edgeinfer maps "
                "masks and boxes through the same inverse); if masks come from your own code, cut the letterbox "
                "window out before resizing them to the frame.", mask_pixels_in_boxes=round(share, 4)))
    return out


def _semantic_checks(spec: Spec, results: list[tuple[Segmentation, tuple[int, int]]]) -> list[dict[str, Any]]:
    classes = [np.unique(seg.class_map) for seg, _ in results]
    if len(results) >= 2 and all(len(c) == 1 for c in classes) and len({int(c[0]) for c in classes}) == 1:
        only = int(classes[0][0])
        name = results[0][0].label(only)
        return [_finding(
            "class_map_constant", "error", f"every pixel of all {len(results)} images is class {only} ({name}): "
            "the model sees nothing it can segment.", "Compare the preprocessing with the training transform "
            "(normalisation, size), make sure the export read the main output (not an auxiliary head) and that "
            "BatchNorm statistics are real (model.eval(); recalibrate after short training).", class_id=only,
            images=len(results))]
    return []


# -- semantic segmentation ------------------------------------------------------------------------------
def _semantic(spec: Spec, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], input_hw: tuple[int, int],
              *, scores: bool = False, **_: Any) -> list[Segmentation]:
    logits = outputs[0]
    if logits.ndim != 4 or (spec.labels is not None and logits.shape[1] != len(spec.labels)):
        raise ModelError(f"output {spec.output.name!r}: expected class logits (B, C, h, w)"
                         f"{'' if spec.labels is None else f' with C = {len(spec.labels)} labels'}, found "
                         f"{logits.shape}.")
    steps = [(s.op, s.params) for s in spec.steps]
    out = []
    for raw, hw in zip(logits, sizes):
        scale, offset = frame_to_logits(ops.placements(steps, *hw), hw, input_hw, raw.shape[1:])
        probs = postprocess.to_probabilities(raw.reshape(raw.shape[0], -1).T, spec.output.kind).T.reshape(raw.shape) \
            if scores else None
        out.append(Segmentation(class_map(raw, hw, scale, offset), labels=spec.labels, scores=probs))
    return out


def _draw_segmentation(frame: np.ndarray, seg: Segmentation) -> np.ndarray:
    seg.overlay(frame)
    draw_text(frame, [_segmentation_summary(seg)])
    return frame


def _segmentation_summary(seg: Segmentation) -> str:
    total = max(seg.class_map.size, 1)
    items = list(seg.areas().items())
    more = f"; ... {len(items) - 6} more" if len(items) > 6 else ""
    return "; ".join(f"{seg.label(i)} {a / total:.1%}" for i, a in items[:6]) + more


# -- embeddings -------------------------------------------------------------------------------------------
def _embed(spec: Spec, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], input_hw: Any,
           **_: Any) -> list[Embedding]:
    l2 = spec.output.kind == "embedding_l2"
    return [Embedding(v, normalized=l2) for v in vectors(outputs[0], l2=l2)]


def _draw_embedding(frame: np.ndarray, emb: Embedding) -> np.ndarray:
    draw_text(frame, [repr(emb)])
    return frame


BOX_COLUMNS = ("label", "class_id", "confidence", "x1", "y1", "x2", "y2")
TABLE: dict[str, Task] = {
    "classification": Task("classification", Prediction, lambda spec: [spec.output.name], _classify,
                           _draw_prediction, _prediction_rows, ("index", "label", "score", "top_k"),
                           _prediction_summary, selftest=lambda raw: postprocess.class_scores(raw)[0], tta=True),
    "detection": Task("detection", Detections, _detect_outputs, _detect, _draw_detections, Detections.rows,
                      BOX_COLUMNS, _detections_summary, checks=_detection_checks),
    "pose": Task("pose", Detections, _detect_outputs, _detect, _draw_detections, Detections.rows,
                 BOX_COLUMNS + ("keypoints",), _detections_summary, checks=_detection_checks),
    "obb": Task("obb", Detections, _detect_outputs, _detect, _draw_detections, Detections.rows,
                BOX_COLUMNS + ("cx", "cy", "w", "h", "angle"), _detections_summary, checks=_detection_checks),
    "segment": Task("segment", Detections, _detect_outputs, _detect, _draw_detections, Detections.rows,
                    BOX_COLUMNS + ("area",), _detections_summary, mask=Detections.instance_map, checks=_detection_checks),
    # the self-test records each class's mean logit over the map: the whole map would not fit in a spec
    "semantic_segmentation": Task("semantic_segmentation", Segmentation, lambda spec: [spec.output.name], _semantic,
                                  _draw_segmentation, Segmentation.rows, ("class_id", "label", "area", "fraction"),
                                  _segmentation_summary, selftest=lambda raw: raw[0].mean(axis=(1, 2)),
                                  mask=lambda seg: seg.class_map, checks=_semantic_checks),
    # the self-test records the vector itself, as the model gives it
    "embedding": Task("embedding", Embedding, lambda spec: [spec.output.name], _embed, _draw_embedding, Embedding.rows,
                      ("dim", "norm"), repr, selftest=lambda raw: vectors(raw, l2=False)[0]),
}
assert set(TABLE) == set(TASKS), "the task table and the spec's task names must agree"


def for_result(result: Any) -> Task:
    """The task a result belongs to (by its type)."""
    for task in TABLE.values():
        if isinstance(result, task.result):
            return task
    raise TypeError(f"expected a Prediction, Detections, Segmentation or Embedding, found {type(result).__name__}.")


def get(name: str) -> Task:
    try:
        return TABLE[name]
    except KeyError:
        raise SpecError(f"task {name!r} is unknown to this runtime; known: {sorted(TABLE)}.") from None
