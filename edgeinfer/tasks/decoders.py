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
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from edgeinfer.tasks import nms as _nms
from edgeinfer.pipeline import ops
from edgeinfer.tasks.detections import Detections, corners
from edgeinfer import spec as _spec
from edgeinfer.errors import EdgeInferError, ModelError, SpecError
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


Shape = tuple  # an output's shape as the graph states it: ints, None where the axis is symbolic


def _extra(head: Head, post: Postprocess, shapes: Sequence[Shape]) -> int | None:
    """The columns an Ultralytics row carries after box, score(s) and class: keypoints, the angle, the mask
    coefficients (as many as the prototypes' channels; None while that is unknown)."""
    n = 0
    if head.keypoints and post.kpt_shape is not None:
        n += post.kpt_shape[0] * post.kpt_shape[1]
    if head.rotated:
        n += 1
    if head.masks:
        nm = shapes[1][1] if len(shapes) > 1 and len(shapes[1]) == 4 else None
        if not isinstance(nm, int):
            return None
        n += nm
    return n


def _rank(shapes: Sequence[Shape], ranks: Sequence[int]) -> str | None:
    if len(shapes) != len(ranks):
        return f"{len(shapes)} output(s) where it reads {len(ranks)}"
    bad = [i for i, (s, r) in enumerate(zip(shapes, ranks)) if len(s) != r]
    if bad:
        return f"output {bad[0]} has {len(shapes[bad[0]])} axes where it reads {ranks[bad[0]]}"
    return None


def _check_ultralytics_raw(shapes, head, post, labels, input_hw):
    problem = _rank(shapes, (3, 4) if head.masks else (3,))
    if problem:
        return problem
    width, extra = shapes[0][1], _extra(head, post, shapes)
    if isinstance(width, int) and extra is not None:
        nc = width - 4 - extra
        if nc < 1:
            return (f"rows of {width} values along axis 1, fewer than 4 box + 1 class" +
                    (f" + {extra} extra" if extra else ""))
        if labels is not None and nc != len(labels):
            return (f"rows of {width} values along axis 1 = 4 box + {nc} classes" +
                    (f" + {extra} extra" if extra else "") + f", but the spec has {len(labels)} labels")
    anchors = shapes[0][2]
    if isinstance(anchors, int) and all(isinstance(v, int) for v in input_hw):
        known = ultralytics_anchors(input_hw)
        if anchors not in known:
            typical = next(iter(known))
            swapped = " (the axes look swapped: (batch, anchors, values))" if width in known else ""
            return (f"{anchors} anchors along axis 2, where an Ultralytics head on a {input_hw[0]}x{input_hw[1]} "
                    f"input has {typical} (strides 8, 16, 32) or {sorted(known)[1:]} (P2/P6 models){swapped}")
    return None


def ultralytics_anchors(input_hw: tuple[int, int]) -> dict[int, tuple[int, ...]]:
    """The anchor counts an Ultralytics head has on an input of this size, with its strides: P3-P5 (8, 16,
    32), P2-P5, P3-P6 and P2-P6 models, a grid cell per stride (``ceil(side / stride)``)."""
    h, w = input_hw
    out = {}
    for strides in ((8, 16, 32), (4, 8, 16, 32), (8, 16, 32, 64), (4, 8, 16, 32, 64)):
        out.setdefault(sum(math.ceil(h / s) * math.ceil(w / s) for s in strides), strides)
    return out


def _classes_ultralytics_raw(shapes, head, post):
    extra = _extra(head, post, shapes)
    return shapes[0][1] - 4 - extra if isinstance(shapes[0][1], int) and extra is not None else None


def _check_ultralytics_nms(shapes, head, post, labels, input_hw):
    problem = _rank(shapes, (3, 4) if head.masks else (3,))
    if problem:
        return problem
    width, extra = shapes[0][2], _extra(head, post, shapes)
    if isinstance(width, int) and extra is not None and width != 6 + extra:
        return f"rows of {width} values along axis 2 where it reads 6" + (f" + {extra} extra" if extra else "")
    return None


def _check_width(width: int, name: str):
    def check(shapes, head, post, labels, input_hw):
        problem = _rank(shapes, (3,))
        if problem:
            return problem
        w = shapes[0][2]
        return f"rows of {w} values along axis 2 where it reads {width} ({name})" if isinstance(w, int) and w != width \
            else None
    return check


def _check_dets_labels(shapes, head, post, labels, input_hw):
    problem = _rank(shapes, (3, 2))
    if problem:
        return problem
    (b, n, w), (lb, ln) = shapes
    if isinstance(w, int) and w != 5:
        return f"dets rows of {w} values where it reads 5 (x1 y1 x2 y2 score)"
    if isinstance(n, int) and isinstance(ln, int) and n != ln:
        return f"{n} dets but {ln} labels"
    return None


def _ultralytics_raw(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int,
                     input_hw: tuple[int, int]) -> list[Candidates]:
    """(B, 4 + nc + extra, A) heads: filter by the best class score, NMS per class, keep ``max_det``."""
    pred = outputs[0]
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


def _ultralytics_nms(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int,
                     input_hw: tuple[int, int]) -> list[Candidates]:
    """(B, max_det, 6 + extra) rows x1 y1 x2 y2 score class [extra] (obb: x y w h score class angle);
    zero-padded. NMS already ran in the graph (or the head needs none): keep the rows above ``conf``."""
    out = []
    for x in outputs[0]:
        x = x[x[:, 4] > post.conf][:post.max_det]
        if head.rotated:
            boxes = np.concatenate([x[:, :4], x[:, 6:7]], axis=1)
            rest = x[:, 7:]
        else:
            boxes, rest = x[:, :4], x[:, 6:]
        out.append(Candidates(boxes.astype(np.float32), x[:, 4].astype(np.float32), x[:, 5].astype(np.int64),
                              rest.astype(np.float32)))
    return out


def _detr(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int,
          input_hw: tuple[int, int]) -> list[Candidates]:
    """(B, Q, 6) queries: normalised cx cy w h, score, class -- Ultralytics' RT-DETR export, whose graph
    already took the top-k over queries x classes in score order. No NMS: the rows above ``conf``."""
    out = []
    for x in outputs[0]:
        x = x[x[:, 4] > post.conf][:post.max_det]
        out.append(Candidates(xywh2xyxy(x[:, :4]), x[:, 4].astype(np.float32), x[:, 5].astype(np.int64),
                              np.zeros((len(x), 0), np.float32)))
    return out


def _dets_labels(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int,
                 input_hw: tuple[int, int]) -> list[Candidates]:
    """``dets`` (B, N, 5) x1 y1 x2 y2 score in input pixels and ``labels`` (B, N): the rows above ``conf``."""
    out = []
    for dets, labels in zip(*outputs):
        ok = dets[:, 4] > post.conf
        order = np.argsort(-dets[ok, 4], kind="stable")[:post.max_det]
        out.append(Candidates(dets[ok, :4][order].astype(np.float32), dets[ok, 4][order].astype(np.float32),
                              labels[ok][order].astype(np.int64), np.zeros((len(order), 0), np.float32)))
    return out


# -- PaddleDetection's PicoDet / GFL heads exported without NMS ------------------------------------------
# PaddleDetection's deploy/python/picodet_postprocess.py (PicoDetPostProcess), which packages such as
# rapid_layout copy: per level, the top 1000 anchors by their best class score; per class, the top 200 above
# the threshold through hard NMS, 100 kept.
PICODET_TOP_K, PICODET_CANDIDATES, PICODET_KEEP = 1000, 200, 100


def picodet_strides(anchors: Sequence[int], input_hw: tuple[int, int]) -> list[int] | None:
    """The stride of each level: the power of two whose grid over the input, ``ceil(H / s) x ceil(W / s)`` as
    PaddleDetection lays it (``np.arange(H / s)``), has that level's anchor count; None where none has."""
    h, w = input_hw
    out = []
    for n in anchors:
        found = [s for s in (2 ** k for k in range(1, 11)) if math.ceil(h / s) * math.ceil(w / s) == n]
        if not found:
            return None
        out.append(found[0])
    return out


def _check_picodet(shapes, head, post, labels, input_hw):
    if head != Head():
        return "a box head without keypoints, angles or masks (use task 'detection')"
    if len(shapes) < 2 or len(shapes) % 2:
        return f"{len(shapes)} output(s) where it reads an even number: the score outputs, then the box outputs"
    problem = _rank(shapes, (3,) * len(shapes))
    if problem:
        return problem
    half = len(shapes) // 2
    scores, boxes = shapes[:half], shapes[half:]
    widths = {s[2] for s in scores}
    bins = {s[2] for s in boxes}
    if len(widths) > 1:
        return f"score outputs of different widths {[s[2] for s in scores]} (one per class, the same at every level)"
    if len(bins) > 1:
        return f"box outputs of different widths {[s[2] for s in boxes]}"
    nbins = bins.pop()
    if isinstance(nbins, int) and (nbins % 4 or nbins < 8):
        return f"box outputs {nbins} wide, not 4 x (reg_max + 1) bins with reg_max >= 1"
    for i, (s, b) in enumerate(zip(scores, boxes)):
        if isinstance(s[1], int) and isinstance(b[1], int) and s[1] != b[1]:
            return f"level {i} with {s[1]} score rows but {b[1]} box rows"
    nc = widths.pop()
    if labels is not None and isinstance(nc, int) and nc != len(labels):
        return f"score outputs of {nc} classes, but the spec has {len(labels)} labels"
    counts = [s[1] for s in scores]
    if all(isinstance(v, int) for v in (*counts, *input_hw)) and picodet_strides(counts, input_hw) is None:
        return (f"levels of {counts} anchors, which no power-of-two stride gives on a {input_hw[0]}x{input_hw[1]} "
                "input")
    return None


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _picodet(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int,
             input_hw: tuple[int, int]) -> list[Candidates]:
    """Score outputs (B, N_l, C) per level, then box-distribution outputs (B, N_l, 4 * (reg_max + 1)): the
    distribution's softmax and integral, times the stride, around the centre of each grid cell
    (distance2bbox), then per class the candidates above ``conf`` through NMS (``iou``) -- PaddleDetection's."""
    half = len(outputs) // 2
    scores, dists = outputs[:half], outputs[half:]
    bins = dists[0].shape[2] // 4
    h, w = input_hw
    strides = picodet_strides([s.shape[1] for s in scores], input_hw)
    if strides is None:  # the input size came with the image (a dynamic graph)
        raise ModelError(f"decoder 'picodet': levels of {[s.shape[1] for s in scores]} anchors, which no "
                         f"power-of-two stride gives on this {h}x{w} input. Check the spec's size belongs to "
                         "the model.")
    out = []
    for b in range(scores[0].shape[0]):
        level_boxes, level_scores = [], []
        for stride, score, dist in zip(strides, scores, dists):
            score = score[b].astype(np.float32)
            rows, cols = np.meshgrid(np.arange(math.ceil(h / stride)), np.arange(math.ceil(w / stride)),
                                     indexing="ij")
            cx, cy = (cols.ravel() + 0.5) * stride, (rows.ravel() + 0.5) * stride
            d = _softmax(dist[b].reshape(-1, bins).astype(np.float32)) @ np.arange(bins, dtype=np.float64)
            d = d.reshape(-1, 4) * stride
            top = np.argsort(-score.max(axis=1), kind="stable")[:PICODET_TOP_K]
            centre = np.stack([cx, cy, cx, cy], axis=1)[top]
            level_boxes.append(centre + np.array([-1, -1, 1, 1]) * d[top])
            level_scores.append(score[top])
        boxes, conf = np.concatenate(level_boxes), np.concatenate(level_scores)
        kept_boxes, kept_conf, kept_cls = [], [], []
        for c in range(conf.shape[1]):
            idx = np.flatnonzero(conf[:, c] > post.conf)
            idx = idx[np.argsort(-conf[idx, c], kind="stable")][:PICODET_CANDIDATES]
            keep = idx[_nms.nms(boxes[idx], conf[idx, c], post.iou)][:PICODET_KEEP]
            kept_boxes.append(boxes[keep])
            kept_conf.append(conf[keep, c])
            kept_cls.append(np.full(len(keep), c, np.int64))
        xyxy, score, cls = np.concatenate(kept_boxes), np.concatenate(kept_conf), np.concatenate(kept_cls)
        order = np.argsort(-score, kind="stable")[:post.max_det]
        # PaddleDetection clips the boxes to the model input before scaling them to the frame
        xyxy = np.clip(xyxy[order], 0, [w, h, w, h]).astype(np.float32)
        out.append(Candidates(xyxy, score[order], cls[order], np.zeros((len(order), 0), np.float32)))
    return out


# -- the decoder table ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decoder:
    """One entry of the decoder table: how a layout of outputs becomes candidates, and what it can read.

    ``decode``: (outputs, postprocess, head, classes, input (h, w)) -> one :class:`Candidates` per image.
    ``expects``: the outputs it reads, in words (the message of a refusal). ``check``: (output shapes -- None
    for a symbolic axis --, head, postprocess, labels or None, input (h, w) or Nones) -> None when it can read
    them, else what is wrong; run on the graph at load and on the real outputs before every decode.
    ``classes``: the class count the shapes say (None: the decoder does not need it). ``outputs``: how many of
    the model's outputs it reads when the spec names none (None: all of them, in the graph's order; a segment
    head adds its prototypes). ``normalised``: boxes are fractions of the image, scaled to the frame as
    Ultralytics' RT-DETR predictor does (its input is a plain stretch; not clipped).
    """

    name: str
    decode: Callable[..., list[Candidates]]
    expects: str
    check: Callable[..., str | None]
    classes: Callable[..., int | None] = lambda shapes, head, post: None
    outputs: int | None = 1
    normalised: bool = False
    builtin: bool = True


TABLE: dict[str, Decoder] = {}


def _add(entry: Decoder) -> None:
    TABLE[entry.name] = entry
    _spec.DECODERS[entry.name] = entry


for _entry in (
    Decoder("ultralytics_raw", _ultralytics_raw, "one output (batch, 4 box + classes [+ keypoints | angle | mask "
            "coefficients], anchors) (a segment head: then the prototypes (batch, coefficients, h, w))",
            _check_ultralytics_raw, _classes_ultralytics_raw),
    Decoder("ultralytics_nms", _ultralytics_nms, "one output (batch, detections, 6 [+ keypoints | mask "
            "coefficients]) rows x1 y1 x2 y2 score class (obb: x y w h score class angle)", _check_ultralytics_nms),
    Decoder("detr", _detr, "one output (batch, queries, 6) rows cx cy w h score class, normalised",
            _check_width(6, "cx cy w h score class"), normalised=True),
    Decoder("dets_labels", _dets_labels, "two outputs: dets (batch, N, 5) x1 y1 x2 y2 score and labels (batch, N)",
            _check_dets_labels, outputs=2),
    Decoder("picodet", _picodet, "PaddleDetection PicoDet/GFL outputs: per level a score output (batch, anchors, "
            "classes), then per level a box distribution (batch, anchors, 4 x (reg_max + 1)), levels on power-of-two "
            "strides", _check_picodet, outputs=None),
):
    _add(_entry)

def _shapes(shapes: Sequence[Sequence[Any]]) -> list[Shape]:
    return [tuple(d if isinstance(d, int) and d >= 0 else None for d in s) for s in shapes]


def refusal(post: Postprocess, head: Head, shapes: Sequence[Sequence[Any]], labels: Sequence[str] | None,
            input_hw: tuple[int | None, int | None], names: Sequence[str] | None = None) -> str | None:
    """None when ``post.decoder`` can read outputs of these shapes; else the whole message of the refusal."""
    entry = TABLE.get(post.decoder)
    if entry is None:
        return (f"decoder {post.decoder!r} is unknown to this runtime (known: {sorted(TABLE)}); a decoder of your "
                "own must be registered with edgeinfer.register_decoder before the model is loaded.")
    found = _shapes(shapes)
    try:
        problem = entry.check(found, head, post, labels, tuple(input_hw))
    except Exception as exc:  # a plug-in's own check that breaks
        problem = f"its check failed ({type(exc).__name__}: {exc})"
    if problem is None:
        return None
    shown = [list(s) for s in found] if names is None else {n: list(s) for n, s in zip(names, found)}
    return (f"decoder {post.decoder!r} expects {entry.expects}; found outputs {shown}: {problem}. Name the outputs "
            "it reads in postprocess.outputs, choose the decoder that matches them (edgeinfer inspect shows both), "
            "or register one of your own with edgeinfer.register_decoder.")


def decode(post: Postprocess, head: Head, outputs: Sequence[np.ndarray], labels: Sequence[str] | None,
           input_hw: tuple[int, int]) -> list[Candidates]:
    """The decoder table's entry for ``post.decoder`` on a batch's outputs: checked against them first, so
    a layout it cannot read is a :class:`ModelError` naming both, never a numpy error."""
    outputs = [np.asarray(o) for o in outputs]
    problem = refusal(post, head, [o.shape for o in outputs], labels, input_hw)
    if problem:
        raise ModelError(problem)
    entry = TABLE[post.decoder]
    nc = len(labels) if labels is not None else entry.classes(_shapes([o.shape for o in outputs]), head, post) or 0
    try:
        return entry.decode(outputs, post, head, nc, tuple(input_hw))
    except EdgeInferError:
        raise
    except Exception as exc:
        raise ModelError(f"decoder {post.decoder!r} failed on outputs {[list(o.shape) for o in outputs]} "
                         f"({type(exc).__name__}: {exc}). Check that the decoder matches the model "
                         "(edgeinfer inspect shows its outputs).") from exc


def default_outputs(post: Postprocess, head: Head, names: Sequence[str]) -> tuple[str, ...]:
    """The outputs a spec's decoder reads when it names none: as many of the graph's as the entry says, in
    the graph's order (a segment head's prototypes added)."""
    entry = TABLE.get(post.decoder)
    n = None if entry is None or entry.outputs is None else entry.outputs + bool(head.masks)
    return tuple(names if n is None else names[:n])


# -- decoders of your own ------------------------------------------------------------------------------------
@dataclass
class Decoded:
    """What a decoder of your own gives for one image, in model-input pixels (the letterboxed/resized input the
    graph saw): ``boxes`` (N, 4) x1 y1 x2 y2 -- or cx cy w h when ``angles`` (N,) in radians are given (oriented
    boxes) --, ``scores`` (N,) and ``classes`` (N,) ints; ``keypoints`` (N, K, 2 or 3) x, y [, visibility] for
    a pose head."""

    boxes: Any
    scores: Any
    classes: Any
    keypoints: Any = None
    angles: Any = None


def _plugin(name: str, fn: Callable[..., Sequence[Decoded]], nms: bool):
    def run(outputs: Sequence[np.ndarray], post: Postprocess, head: Head, nc: int,
            input_hw: tuple[int, int]) -> list[Candidates]:
        got = list(fn(list(outputs), tuple(input_hw)))
        if len(got) != len(outputs[0]):
            raise ModelError(f"decoder {name!r}: expected one Decoded per image of the batch ({len(outputs[0])}), "
                             f"found {len(got)}.")
        return [_candidates(name, d, post, head, nms) for d in got]
    return run


def _candidates(name: str, d: Any, post: Postprocess, head: Head, nms: bool) -> Candidates:
    if not isinstance(d, Decoded):
        raise ModelError(f"decoder {name!r}: expected edgeinfer.Decoded per image, found {type(d).__name__}.")
    boxes = np.asarray(d.boxes, np.float32).reshape(-1, 4) if np.size(d.boxes) else np.zeros((0, 4), np.float32)
    scores = np.asarray(d.scores, np.float32).reshape(-1)
    classes = np.asarray(d.classes).reshape(-1)
    n = len(boxes)
    if len(scores) != n or len(classes) != n or (n and not np.issubdtype(classes.dtype, np.number)):
        raise ModelError(f"decoder {name!r}: expected boxes (N, 4), scores (N,) and classes (N,) of one N, found "
                         f"{np.shape(d.boxes)}, {np.shape(d.scores)}, {np.shape(d.classes)}.")
    classes = classes.astype(np.int64)
    angles = None if d.angles is None else np.asarray(d.angles, np.float32).reshape(-1)
    if (angles is not None) != head.rotated or (angles is not None and len(angles) != n):
        raise ModelError(f"decoder {name!r}: " + (
            f"expected {n} angles for an obb task, found {None if angles is None else len(angles)}." if head.rotated
            else "gave angles, which only an obb task reads; set the spec's task to 'obb'."))
    extra = np.zeros((n, 0), np.float32)
    if head.keypoints:
        k, dims = post.kpt_shape
        kp = None if d.keypoints is None else np.asarray(d.keypoints, np.float32)
        if kp is None or kp.shape != (n, k, dims):
            raise ModelError(f"decoder {name!r}: expected keypoints ({n}, {k}, {dims}) (postprocess.kpt_shape), "
                             f"found {None if kp is None else kp.shape}.")
        extra = kp.reshape(n, k * dims)
    elif d.keypoints is not None:
        raise ModelError(f"decoder {name!r}: gave keypoints, which only a pose task reads; set the spec's task to "
                         "'pose' and postprocess.kpt_shape.")
    ok = scores > post.conf
    boxes, scores, classes, extra = boxes[ok], scores[ok], classes[ok], extra[ok]
    angles = angles[ok] if angles is not None else None
    order = np.argsort(-scores, kind="stable")[:post.max_nms]
    boxes, scores, classes, extra = boxes[order], scores[order], classes[order], extra[order]
    if angles is not None:
        boxes = np.concatenate([boxes, angles[order][:, None]], axis=1)
    if not nms:
        keep = np.arange(len(scores))[:post.max_det]
    elif angles is not None:
        offset = np.zeros_like(boxes)
        if not post.agnostic:
            offset[:, :2] = classes[:, None].astype(np.float32) * np.float32(post.max_wh)
        keep = _nms.nms_rotated(boxes + offset, scores, post.iou)[:post.max_det]
    else:
        keep = _nms.batched_nms(boxes, scores, classes, post.iou, max_wh=post.max_wh,
                                agnostic=post.agnostic)[:post.max_det]
    return Candidates(boxes[keep], scores[keep], classes[keep], extra[keep])


def register_decoder(name: str, fn: Callable[[list[np.ndarray], tuple[int, int]], Sequence[Decoded]], *,
                     outputs: int | None = 1, check: Callable[[list[Shape]], str | None] | None = None,
                     expects: str = "", nms: bool = True, replace: bool = False):
    """Make a detector head of your own known to edgeinfer under ``name`` (a spec's ``postprocess.decoder``).

    ``fn(outputs, input_hw)`` gets the raw outputs the spec names (``postprocess.outputs``, batch axis kept) and
    the model input's (height, width), and returns one :class:`Decoded` per image in model-input pixels.
    edgeinfer then keeps the candidates above ``conf``, runs its NMS (per class unless ``agnostic``; probiou
    for oriented boxes; ``nms=False`` when the head needs none), keeps ``max_det``, maps boxes and keypoints
    back to the frame through the inverse of the spec's geometry and gives :class:`Detections` -- to
    ``predict``, the CLI, stream, serve and the doctor alike.

    ``outputs``: how many of the graph's outputs it reads when the spec names none (None: all). ``check``:
    output shapes (None for a symbolic axis) -> None, or what is wrong with them; run on the graph at load and
    on the outputs before each decode, so a model it cannot read is refused at load. ``expects``: the outputs
    it reads, in words, for that refusal. Returns ``fn`` (usable as a decorator's body). Register before
    loading a model whose spec names it, on every machine that runs it.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise SpecError(f"register_decoder: expected a name of letters, digits and underscores, found {name!r}.")
    if name in TABLE and (TABLE[name].builtin or not replace):
        raise SpecError(f"register_decoder: {name!r} is already " + (
            "a built-in decoder; pick another name." if TABLE[name].builtin else
            "registered; pass replace=True to replace it."))
    if not callable(fn) or (check is not None and not callable(check)):
        raise SpecError("register_decoder: expected a function (outputs, input_hw) -> [Decoded] and an optional "
                        f"check function, found {type(fn).__name__} and {type(check).__name__}.")
    if outputs is not None and (not isinstance(outputs, int) or isinstance(outputs, bool) or not 0 < outputs <= 8):
        raise SpecError(f"register_decoder: outputs: expected 1 to 8 or None (all), found {outputs!r}.")

    def checked(shapes, head, post, labels, input_hw):
        if head.masks:
            return "a box, pose or obb head (instance masks are read by the Ultralytics decoders only)"
        return None if check is None else check(list(shapes))

    _add(Decoder(name, _plugin(name, fn, nms), expects or f"the outputs {name!r} reads", checked, outputs=outputs,
                 builtin=False))
    return fn


_spec._register_decoder = register_decoder


def unregister_decoder(name: str) -> None:
    """Forget a decoder registered with :func:`register_decoder` (a built-in one stays)."""
    entry = TABLE.get(name)
    if entry is not None and not entry.builtin:
        del TABLE[name]
        _spec.DECODERS.pop(name, None)


def to_original(c: Candidates, chain: Sequence[ops.Placement], orig_hw: tuple[int, int], *, head: Head,
                post: Postprocess, labels: Sequence[str] | None, protos: np.ndarray | None = None,
                input_hw: tuple[int, int] | None = None) -> Detections:
    """Map candidates from model-input pixels to the original frame, as Ultralytics 8.4 does: boxes and
    keypoints through the inverse geometry, then clipped to [0, w] x [0, h]; rotated boxes' centres and
    sides through it (by axis), angle untouched, not clipped; normalised DETR boxes times the frame size;
    instance masks from their prototypes (``protos``, (32, mh, mw)) as :func:`instance_masks` says."""
    h0, w0 = orig_hw
    boxes = c.boxes.astype(np.float32, copy=True)
    if TABLE[post.decoder].normalised:
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
