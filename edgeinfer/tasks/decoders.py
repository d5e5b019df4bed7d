"""Detector outputs to :class:`~edgeinfer.tasks.detections.Detections`: one decoder per output layout, then the
way back to the original frame.

A decoder reads the raw outputs of a batch and gives, per image, candidates in model-input pixels:
boxes (xyxy, or xywhr for rotated boxes), confidences, class ids and the extra columns (keypoints). NMS
runs where the layout needs it (:mod:`edgeinfer.tasks.nms`). The boxes then go back through the inverse of the
spec's geometric steps (:func:`edgeinfer.pipeline.ops.to_source`) and are clipped to the frame, as Ultralytics'
``scale_boxes``/``clip_boxes`` do. The semantics follow the version named in ``postprocess.rules``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from edgeinfer.tasks import nms as _nms
from edgeinfer.pipeline import ops
from edgeinfer.tasks.detections import Detections, corners
from edgeinfer.errors import ModelError
from edgeinfer.spec import Postprocess


@dataclass(frozen=True)
class Candidates:
    """Decoded detections of one image in model-input pixels, highest confidence first."""

    boxes: np.ndarray       # (N, 4) xyxy, or (N, 5) xywhr when rotated
    confidence: np.ndarray  # (N,)
    class_id: np.ndarray    # (N,)
    extra: np.ndarray       # (N, E): keypoints (pose), mask coefficients (segment), empty otherwise


@dataclass(frozen=True)
class Head:
    """What a detector's rows carry beyond box, score and class (its task entry says): an angle for oriented
    boxes, keypoints for pose, mask coefficients with a second output of prototypes for instance masks."""

    rotated: bool = False
    keypoints: bool = False
    masks: bool = False


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    """Centre/size boxes to corners, in float32 as Ultralytics computes them (half size subtracted/added)."""
    half = x[:, 2:4] / np.float32(2)
    return np.concatenate([x[:, 0:2] - half, x[:, 0:2] + half], axis=1)


def _ultralytics_raw(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int) -> list[Candidates]:
    """(B, 4 + nc + extra, A) heads: filter by the best class score, NMS per class, keep ``max_det``."""
    pred = outputs[0]
    if pred.ndim != 3 or pred.shape[1] < 4 + nc:
        raise ModelError(f"decoder ultralytics_raw: expected an output (batch, 4 + {nc} classes [+ extra], "
                         f"anchors), found {pred.shape}.")
    rotated = head.rotated
    out = []
    for x in pred:  # (4 + nc + extra, A)
        cls = x[4:4 + nc]
        keep = cls.max(axis=0) > post.conf
        x = x[:, keep].T  # (n, 4 + nc + extra): candidates only, then transposed (a small copy)
        box, scores, rest = x[:, :4], x[:, 4:4 + nc], x[:, 4 + nc:]
        if post.multi_label:
            i, j = np.nonzero(scores > post.conf)
            box, conf, cls_id, rest = box[i], scores[i, j], j, rest[i]
        else:
            cls_id = scores.argmax(axis=1)
            conf = scores[np.arange(len(scores)), cls_id]
            ok = conf > post.conf
            box, conf, cls_id, rest = box[ok], conf[ok], cls_id[ok], rest[ok]
        if len(conf) > post.max_nms:
            top = np.argsort(-conf, kind="stable")[:post.max_nms]
            box, conf, cls_id, rest = box[top], conf[top], cls_id[top], rest[top]
        if rotated:
            angle, rest = rest[:, -1:], rest[:, :-1]
            boxes = np.concatenate([box, angle], axis=1)
            offset = np.zeros_like(boxes)
            if not post.agnostic:
                offset[:, :2] = cls_id[:, None].astype(np.float32) * np.float32(post.max_wh)
            kept = _nms.nms_rotated(boxes + offset, conf, post.iou)[:post.max_det]
        else:
            boxes = xywh2xyxy(box)
            kept = _nms.batched_nms(boxes, conf, cls_id, post.iou, max_wh=post.max_wh,
                                    agnostic=post.agnostic)[:post.max_det]
        out.append(Candidates(boxes[kept], conf[kept], cls_id[kept].astype(np.int64), rest[kept]))
    return out


def _ultralytics_nms(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int) -> list[Candidates]:
    """(B, max_det, 6 + extra) rows x1 y1 x2 y2 score class [extra] (obb: x y w h score class angle);
    zero-padded. NMS already ran in the graph (or the head needs none): keep the rows above ``conf``."""
    pred = outputs[0]
    if pred.ndim != 3 or pred.shape[2] < 6:
        raise ModelError(f"decoder ultralytics_nms: expected an output (batch, detections, 6 [+ extra]), "
                         f"found {pred.shape}.")
    out = []
    for x in pred:
        x = x[x[:, 4] > post.conf][:post.max_det]
        if head.rotated:
            boxes = np.concatenate([x[:, :4], x[:, 6:7]], axis=1)
            rest = x[:, 7:]
        else:
            boxes, rest = x[:, :4], x[:, 6:]
        out.append(Candidates(boxes.astype(np.float32), x[:, 4].astype(np.float32), x[:, 5].astype(np.int64),
                              rest.astype(np.float32)))
    return out


def _detr(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int) -> list[Candidates]:
    """(B, Q, 6) queries: normalised cx cy w h, score, class -- Ultralytics' RT-DETR export, whose graph
    already took the top-k over queries x classes in score order. No NMS: the rows above ``conf``."""
    pred = outputs[0]
    if pred.ndim != 3 or pred.shape[2] != 6:
        raise ModelError(f"decoder detr: expected an output (batch, queries, 6), found {pred.shape}.")
    out = []
    for x in pred:
        x = x[x[:, 4] > post.conf][:post.max_det]
        out.append(Candidates(xywh2xyxy(x[:, :4]), x[:, 4].astype(np.float32), x[:, 5].astype(np.int64),
                              np.zeros((len(x), 0), np.float32)))
    return out


def _dets_labels(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int) -> list[Candidates]:
    """``dets`` (B, N, 5) x1 y1 x2 y2 score in input pixels and ``labels`` (B, N): the rows above ``conf``."""
    if len(outputs) != 2 or outputs[0].ndim != 3 or outputs[0].shape[2] != 5 or outputs[1].shape != outputs[0].shape[:2]:
        raise ModelError("decoder dets_labels: expected outputs dets (batch, N, 5) and labels (batch, N), found "
                         f"{[o.shape for o in outputs]}.")
    out = []
    for dets, labels in zip(*outputs):
        ok = dets[:, 4] > post.conf
        order = np.argsort(-dets[ok, 4], kind="stable")[:post.max_det]
        out.append(Candidates(dets[ok, :4][order].astype(np.float32), dets[ok, 4][order].astype(np.float32),
                              labels[ok][order].astype(np.int64), np.zeros((len(order), 0), np.float32)))
    return out


Decoder = Callable[[Sequence[np.ndarray], Postprocess, Head, int], list[Candidates]]
DECODERS: dict[str, Decoder] = {"ultralytics_raw": _ultralytics_raw, "ultralytics_nms": _ultralytics_nms,
                                "detr": _detr, "dets_labels": _dets_labels}
# DETR-style boxes are fractions of the image; Ultralytics' RT-DETR predictor multiplies them by the
# original width and height (its input is a plain stretch) and does not clip them.
NORMALISED = {"detr"}


def to_original(c: Candidates, chain: Sequence[ops.Placement], orig_hw: tuple[int, int], *, head: Head,
                post: Postprocess, labels: Sequence[str] | None, protos: np.ndarray | None = None,
                input_hw: tuple[int, int] | None = None) -> Detections:
    """Map candidates from model-input pixels to the original frame, as Ultralytics 8.4 does: boxes and
    keypoints through the inverse geometry, then clipped to [0, w] x [0, h]; rotated boxes' centres and
    sides through it (by axis), angle untouched, not clipped; normalised DETR boxes times the frame size;
    instance masks from their prototypes (``protos``, (32, mh, mw)) as :func:`instance_masks` says."""
    h0, w0 = orig_hw
    boxes = c.boxes.astype(np.float32, copy=True)
    if post.decoder in NORMALISED:
        boxes[:, [0, 2]] *= np.float32(w0)
        boxes[:, [1, 3]] *= np.float32(h0)
        return Detections(boxes, c.confidence, c.class_id, labels=labels)
    if head.rotated:
        centre = ops.to_source(boxes[:, :2], chain)
        xywhr = np.concatenate([centre, boxes[:, 2:4] / _gain(chain), boxes[:, 4:5]], axis=1)
        pts = corners(xywhr)
        xyxy = np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1) if len(xywhr) else np.zeros((0, 4))
        return Detections(xyxy, c.confidence, c.class_id, xywhr=xywhr, labels=labels)
    xy = ops.to_source(boxes.reshape(-1, 2, 2), chain).reshape(-1, 4)
    xy[:, [0, 2]] = np.clip(xy[:, [0, 2]], 0, w0)
    xy[:, [1, 3]] = np.clip(xy[:, [1, 3]], 0, h0)
    keypoints = mask = None
    if head.keypoints:
        k, dims = post.kpt_shape
        kpts = c.extra[:, :k * dims].reshape(-1, k, dims).astype(np.float32, copy=True)
        kpts[..., :2] = ops.to_source(kpts[..., :2], chain)
        kpts[..., 0] = np.clip(kpts[..., 0], 0, w0)
        kpts[..., 1] = np.clip(kpts[..., 1], 0, h0)
        keypoints = kpts
    if head.masks:
        mask, keep = instance_masks(c.extra, protos, boxes, xy, input_hw, orig_hw, retina=post.retina_masks)
        return Detections(xy[keep], c.confidence[keep], c.class_id[keep], mask=mask[keep], labels=labels)
    return Detections(xy, c.confidence, c.class_id, keypoints=keypoints, labels=labels)


def _bilinear(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """torch's ``F.interpolate(mode="bilinear", align_corners=False)`` of float masks (N, h, w) to ``hw``: OpenCV's
    INTER_LINEAR samples the same half-pixel-centred points with float weights."""
    if m.shape[1:] == tuple(hw):
        return m
    return np.stack([cv2.resize(x, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR) for x in m]) if len(m) else \
        np.zeros((0, *hw), np.float32)


def crop_to_boxes(masks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Zero every mask outside its box: pixel (row r, column c) stays when x1 <= c < x2 and y1 <= r < y2."""
    n, h, w = masks.shape
    cols, rows = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    inside_c = (cols[None, :] >= boxes[:, 0:1]) & (cols[None, :] < boxes[:, 2:3])
    inside_r = (rows[None, :] >= boxes[:, 1:2]) & (rows[None, :] < boxes[:, 3:4])
    return masks & inside_r[:, :, None] & inside_c[:, None, :]


def _content_window(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a letterboxed ``src_hw`` image that holds the ``dst_hw`` frame, as
    Ultralytics' ``scale_masks`` recomputes it from the two sizes."""
    (sh, sw), (dh, dw) = src_hw, dst_hw
    gain = min(sh / dh, sw / dw)
    nh, nw = max(round(dh * gain), 1), max(round(dw * gain), 1)
    top, left = round((sh - nh) / 2 - 0.1), round((sw - nw) / 2 - 0.1)
    return top, top + nh, left, left + nw


def instance_masks(coef: np.ndarray, protos: np.ndarray, boxes_in: np.ndarray, boxes_out: np.ndarray,
                   input_hw: tuple[int, int], orig_hw: tuple[int, int], *, retina: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean instance masks (N, h0, w0) in the original frame, by Ultralytics 8.4's order of operations,
    and which of them the tool keeps (a mask empty at the resolution the tool computes it is dropped).

    The logits are coefficients x prototypes. Default mode (``process_mask``): upsampled bilinearly to the
    model input, thresholded at 0, cropped to the input-space boxes -- the tool's masks -- then the
    letterbox window is cut out and resized to the frame (nearest). ``retina`` (``process_mask_native``):
    upsampled by 1, 2 or 4 (the least that crops the padding on whole pixels), the letterbox window cut out,
    resized bilinearly to the frame, thresholded at 0 and cropped to the frame-space boxes."""
    c, mh, mw = protos.shape
    h0, w0 = orig_hw
    if len(coef) == 0:
        return np.zeros((0, h0, w0), bool), np.zeros(0, bool)
    logits = (coef[:, :c].astype(np.float32) @ protos.reshape(c, -1).astype(np.float32)).reshape(-1, mh, mw)
    if not retina:
        masks = crop_to_boxes(_bilinear(logits, input_hw) > 0, boxes_in)
        top, bottom, left, right = _content_window(tuple(input_hw), orig_hw)
        window = masks[:, top:bottom, left:right].astype(np.uint8)
        framed = np.stack([cv2.resize(m, (w0, h0), interpolation=cv2.INTER_NEAREST) for m in window]).astype(bool)
        return framed, masks.any(axis=(1, 2))
    gain = min(4 * mh / h0, 4 * mw / w0)
    pad = (4 * mh - max(round(h0 * gain), 1)) | (4 * mw - max(round(w0 * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    up = _bilinear(logits, (mh * f, mw * f))
    top, bottom, left, right = _content_window((mh * f, mw * f), orig_hw)
    masks = crop_to_boxes(_bilinear(np.ascontiguousarray(up[:, top:bottom, left:right]), orig_hw) > 0, boxes_out)
    return masks, masks.any(axis=(1, 2))


def _gain(chain: Sequence[ops.Placement]) -> np.ndarray:
    """The overall x/y scale of the geometric steps (sizes map back by dividing by it)."""
    g = np.ones(2, dtype=np.float64)
    for pl in chain:
        g *= pl.scale
    return g.astype(np.float32)
