"""Detection, pose, oriented boxes and instance segmentation: one family of task entries over the detector
decoders (:mod:`edgeinfer.tasks.decoders`), with their drawing, rows and doctor checks."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import numpy as np

from edgeinfer.errors import ModelError
from edgeinfer.pipeline import ops
from edgeinfer.spec import REEXPORT, expect
from edgeinfer.tasks import decoders, gates
from edgeinfer.tasks.base import Evidence, Findings, Task, finding, label_size, place_labels, put_label
from edgeinfer.tasks.detections import Detections

# what a detector's spec may say its output is: the decoder reads it; the kind only records the source's word
KINDS = ("raw", "logits", "probabilities", "multilabel_logits", "multilabel_probabilities")

PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]


def _finisher(head: decoders.Head):
    def finish(spec: Any, outputs: Sequence[np.ndarray], prepared: Any, *, conf: float | None = None,
               iou: float | None = None, max_det: int | None = None, retina_masks: bool | None = None,
               **_: Any) -> list[Detections]:
        post = spec.postprocess
        changes = {k: v for k, v in (("conf", conf), ("iou", iou), ("max_det", max_det),
                                     ("retina_masks", retina_masks)) if v is not None}
        if changes:
            post = dataclasses.replace(post, **changes)
            post.validate()
        candidates = decoders.decode(post, head, outputs, spec.labels, prepared.input_hw)
        steps = [(s.op, s.params) for s in spec.steps]
        protos = outputs[1] if head.masks else [None] * len(candidates)
        return [decoders.to_original(c, ops.placements(steps, *hw), hw, head=head, post=post, labels=spec.labels,
                                     protos=pr, input_hw=prepared.input_hw)
                for c, hw, pr in zip(candidates, prepared.sizes, protos)]
    return finish


def _graph_checker(head: decoders.Head):
    def check_graph(spec: Any, shapes: dict[str, tuple], path: str) -> None:
        post = spec.postprocess
        problem = decoders.refusal(post, head, [shapes[o] for o in post.outputs], spec.labels,
                                   spec.input.height_width, names=post.outputs)
        if problem:
            raise ModelError(f"{path}: {problem}")
    return check_graph


def _validator(head: decoders.Head):
    def validate(spec: Any) -> None:
        post = spec.postprocess
        expect(not head.masks or len(post.outputs) == 2, "postprocess.outputs", "two outputs for a segment model "
               "(detections with mask coefficients, then prototypes)", list(post.outputs), REEXPORT)
        expect((post.kpt_shape is not None) == head.keypoints, "postprocess.kpt_shape",
               "[keypoints, 2 or 3] for a pose model and null otherwise", post.kpt_shape, REEXPORT)
    return validate


def _draw(frame: np.ndarray, det: Detections, avoid: Sequence[Sequence[float]] = ()) -> np.ndarray:
    """Boxes (or oriented boxes, masks, keypoints) first, then each label on a filled background where it covers
    no other label nor an ``avoid`` rectangle (:func:`place_labels`), the most confident placed first."""
    thick = max(2, round(frame.shape[1] / 400))
    colors = [PALETTE[int(c) % len(PALETTE)] for c in det.class_id]
    for i, color in enumerate(colors):
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
    texts = [f"{name} {det.confidence[i]:.2f}" for i, name in enumerate(det.class_name)]
    sizes = [label_size(t, frame.shape[1]) for t in texts]
    order = np.argsort(-np.asarray(det.confidence, np.float64), kind="stable")
    rects = place_labels(np.asarray(det.xyxy, np.float64).reshape(-1, 4), sizes, frame.shape[:2], avoid=avoid,
                         order=order)
    for text, rect, color in zip(texts, rects, colors):
        put_label(frame, text, rect, color)
    return frame


def _summary(det: Detections) -> str:
    if not len(det):
        return "no detections"
    shown = 8
    items = [f"{name} {c:.2f} [{', '.join(f'{v:.0f}' for v in box)}]"
             for name, c, box in zip(det.class_name[:shown], det.confidence, det.xyxy)]
    more = f"; ... {len(det) - shown} more" if len(det) > shown else ""
    return f"{len(det)} detection{'s' * (len(det) != 1)}: " + "; ".join(items) + more


def _checks(spec: Any, evidence: Evidence, measured: dict[str, Any]) -> Findings:
    results = evidence.results
    post = spec.postprocess
    boxes = sum(len(d) for d, _ in results)
    measured["detections"] = boxes
    measured["detections_per_image"] = [len(d) for d, _ in results]
    if boxes == 0:
        return [finding(
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
        out.append(finding(
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
            out.append(finding(
                "masks_misaligned", "error", f"only {share:.0%} of the mask pixels lie inside their own boxes: the "
                "masks are not mapped back to the frame the way the boxes are (a letterbox window not cut out, "
                "or the prototypes read at the wrong scale).", "Use the spec's segment decoder (edgeinfer maps "
                "masks and boxes through the same inverse); if masks come from your own code, cut the letterbox "
                "window out before resizing them to the frame.", mask_pixels_in_boxes=round(share, 4)))
    return out


# The confidence measure of a detector: the mean of its three best detections, down to a floor of 0.01, zeros
# where it finds fewer. Measured on the shapes detector (16 frames, red and blue swapped against as deployed):
# it separates the two orders with a paired t of 2.7, the sum of the detections above the spec's threshold only
# 2.1, the count 1.4 (a frame gains or loses a whole detection, or nothing).
TOP, FLOOR = 3, 0.01


def _confidence(head: decoders.Head):
    def confidence(spec: Any, outputs: Sequence[np.ndarray], input_hw: tuple[int, int] | None = None) -> np.ndarray:
        post = dataclasses.replace(spec.postprocess, conf=min(FLOOR, spec.postprocess.conf))
        hw = tuple(input_hw) if input_hw is not None else spec.input.height_width
        out = []
        for c in decoders.decode(post, head, outputs, spec.labels, hw):
            best = np.sort(np.asarray(c.confidence, np.float64))[::-1][:TOP]
            out.append(float(np.pad(best, (0, TOP - len(best))).mean()))
        return np.asarray(out)
    return confidence


BOX_COLUMNS = ("label", "class_id", "confidence", "x1", "y1", "x2", "y2")


def _sample(spec: Any, outputs: Sequence[np.ndarray] | None, result: Detections) -> dict[str, Any]:
    """What the gate compares: the boxes in the frame, classes and confidences, and the raw outputs when there are
    (another tool's pipeline has none)."""
    raw = {} if outputs is None else {"outputs": list(outputs)}
    return {**raw, "xyxy": result.xyxy, "class_id": result.class_id, "confidence": result.confidence}


def _entry(name: str, head: decoders.Head, columns: tuple[str, ...], **extra: Any) -> Task:
    return Task(name, Detections, _finisher(head), _draw, Detections.rows, BOX_COLUMNS + columns, _summary, KINDS,
                outputs=lambda spec: list(spec.postprocess.outputs), detector=True, validate=_validator(head),
                checks=_checks, gate=gates.detection, confidence=_confidence(head), check_graph=_graph_checker(head),
                default_outputs=lambda post, names: decoders.default_outputs(post, head, names),
                sample=_sample, **extra)


TASKS = (
    _entry("detection", decoders.Head(), ()),
    _entry("pose", decoders.Head(keypoints=True), ("keypoints",)),
    _entry("obb", decoders.Head(rotated=True), ("cx", "cy", "w", "h", "angle")),
    _entry("segment", decoders.Head(masks=True), ("area",), mask=Detections.instance_map),
)
