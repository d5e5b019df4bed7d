"""What a task is: the one record each task module fills in, and the drawing helpers they share.

The model, the importers, the schema, the doctor, bench, stream, serve and the CLI ask a task's record
(:func:`edgeinfer.tasks.get`); none of them tests a task's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np

Result = Any  # Prediction | Detections | Segmentation | Embedding
Findings = list[dict[str, Any]]


@dataclass(frozen=True)
class Task:
    """One task: the spec it accepts, the outputs it reads, how they become results, how results are drawn,
    tabulated and checked."""

    name: str
    result: type
    # (spec, outputs of a batch, the Prepared batch, options) -> one result per image
    finish: Callable[..., list[Result]]
    # (frame, result, avoid=[(x1, y1, x2, y2), ...]) -> the frame drawn on; its labels keep off the ``avoid``
    # rectangles (the camera loop's status line)
    draw: Callable[..., np.ndarray]
    rows: Callable[[Result], list[dict[str, Any]]]
    columns: tuple[str, ...]  # the keys of its rows, in CSV order
    summary: Callable[[Result], str]  # one line for a person
    output_kinds: tuple[str, ...]  # the spec's output.kind values this task reads
    # the spec -> the output names the task reads (default: the spec's one output)
    outputs: Callable[[Any], list[str]] = lambda spec: [spec.output.name]
    # a detector reads its outputs through the spec's postprocess section (decoder, thresholds, NMS)
    detector: bool = False
    # the task's own rules on a spec (after the schema's common checks); raises SpecError
    validate: Callable[[Any], None] | None = None
    # the output kind a model's raw output on probe images shows, when its source does not say
    kind_of: Callable[[np.ndarray], str] | None = None
    # the model input's height and width may follow each image (the pipeline decides them), else one fixed size
    dense: bool = False
    # raw output of the self-test image -> the vector the spec records (None: the task has no self-test)
    selftest: Callable[[np.ndarray], np.ndarray] | None = None
    # test-time augmentation: merges the raw outputs of views (views, N, ...) into results (None: no TTA)
    tta: Callable[..., list[Result]] | None = None
    # result -> (H, W) label map to save as a mask image (None: the task has no masks)
    mask: Callable[[Result], np.ndarray] | None = None
    # the doctor's checks of a task on real images: (spec, evidence) -> findings as dicts with code, severity,
    # message, fix, details. Evidence: ``results`` [(result, (h, w))] and ``outputs`` (the raw outputs of each
    # image). None: the task has no checks of its own (it never borrows another task's).
    checks: Callable[[Any, "Evidence"], Findings] | None = None
    # the parity gate a converted model must pass against its reference (export, precision variants, engines):
    # (reference samples, candidate samples, tolerances) -> Verdict (edgeinfer.tasks.gates)
    gate: Callable[..., Any] | None = None
    # what the gate compares for one image: (spec, the task's raw outputs of that image with the batch axis kept,
    # its result) -> the gate's fields. Engines and variants are judged against ONNX Runtime with the raw outputs;
    # another tool's pipeline (the doctor's reference=) has none: outputs None, and the result may be that tool's
    # own (anything with the same attributes, e.g. supervision's Detections). None: no such comparison.
    sample: Callable[[Any, Sequence[np.ndarray] | None, Any], dict[str, Any]] | None = None
    # per-class probabilities of a batch's raw output, for plots and parity (classifiers only)
    scores: Callable[[Any, np.ndarray], np.ndarray] | None = None
    # how sure the model is of each image of a batch, from its raw outputs: (spec, outputs) -> (N,) floats, larger
    # = surer. The doctor's channel-order probe compares it on the images as deployed and with their red and blue
    # swapped (a model fed the other order than it was trained on is surer swapped). None: no such measure.
    confidence: Callable[[Any, Sequence[np.ndarray]], np.ndarray] | None = None
    # the task's check of a spec against the graph at load: (spec, {output name: shape, None where symbolic},
    # path) -> None, or raises ModelError saying what it expected and what it found (a detector: its decoder)
    check_graph: Callable[[Any, dict[str, tuple], str], None] | None = None
    # the outputs a spec of this task reads when its source names none: (postprocess, the graph's output names)
    default_outputs: Callable[[Any, Sequence[str]], tuple[str, ...]] | None = None


@dataclass(frozen=True)
class Evidence:
    """What the doctor saw a model do on real images: each result with its image's (h, w), and the raw outputs
    the task read for it (one list of arrays per image, batch axis kept)."""

    results: list[tuple[Result, tuple[int, int]]]
    outputs: list[list[np.ndarray]]


def finding(code: str, severity: str, message: str, fix: str, **details: Any) -> dict[str, Any]:
    return {"code": code, "severity": severity, "message": message, "fix": fix, "details": details}


def draw_text(out: np.ndarray, lines: Sequence[str], origin: tuple[int, int] = (10, 30), color=(255, 255, 255)) -> None:
    """Outlined text (black under the colour) that reads on any background, scaled to the frame's width."""
    scale = max(0.5, out.shape[1] / 1280)
    for i, text in enumerate(lines):
        x, y = origin[0], int(origin[1] + 32 * i * scale)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (0, 0, 0), int(4 * scale), cv2.LINE_AA)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, color, int(2 * scale), cv2.LINE_AA)


FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_style(width: int) -> tuple[float, int, int]:
    """Font scale, stroke thickness and padding (px) of a label on a frame ``width`` pixels wide: 10 px letters
    up to 800 px wide, growing with the frame beyond."""
    scale = max(0.45, 0.45 * width / 800)
    return scale, max(1, round(scale * 2)), max(2, round(scale * 6))


def label_size(text: str, width: int) -> tuple[int, int]:
    """Width and height (px) of ``text``'s label, its padding included, on a frame ``width`` pixels wide."""
    scale, thick, pad = label_style(width)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    return tw + 2 * pad, th + base + 2 * pad


def put_label(out: np.ndarray, text: str, rect: Sequence[int], color: Sequence[int]) -> None:
    """``text`` on a filled ``color`` rectangle (x1, y1, x2, y2), in black or white, whichever reads on it."""
    scale, thick, pad = label_style(out.shape[1])
    x1, y1, x2, y2 = (int(v) for v in rect)
    cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), tuple(int(c) for c in color), -1)
    b, g, r = (float(c) for c in color[:3])
    ink = (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)
    (_, th), base = cv2.getTextSize(text, FONT, scale, thick)
    cv2.putText(out, text, (x1 + pad, y2 - pad - base), FONT, scale, ink, thick, cv2.LINE_AA)


def place_labels(boxes: np.ndarray, sizes: Sequence[tuple[int, int]], frame_hw: tuple[int, int], *,
                 avoid: Sequence[Sequence[float]] = (), order: Sequence[int] | None = None) -> np.ndarray:
    """Rectangles (N, 4) x1, y1, x2, y2 (int) for the labels of ``boxes`` (N, 4), each ``sizes[i]`` (w, h),
    inside the frame, none sharing a pixel with another nor with an ``avoid`` rectangle where there is room.

    Each label takes the first free place of: above the box's top-left corner, inside it at the top, below
    it, inside it at the bottom, the same at the right corner, then shifted further up, down or into the box
    one label height at a time (supervision's label annotator spreads its labels apart too, by moving them).
    ``order``: which labels choose first (default: as given; pass the most confident first). Where no place is
    free, the one overlapping the least. About 20 microseconds a label: cheap enough for the camera loop.
    """
    h_img, w_img = frame_hw
    n = len(boxes)
    out = np.zeros((n, 4), np.int64)
    if not n:
        return out
    b = np.round(np.asarray(boxes, np.float64).reshape(n, 4)).astype(np.int64)
    wh = np.asarray(sizes, np.int64).reshape(n, 2)
    x1, y1, x2, y2, w, h = b[:, 0:1], b[:, 1:2], b[:, 2:3], b[:, 3:4], wh[:, 0:1], wh[:, 1:2]
    ys = [y1 - h, y1, y2, y2 - h]  # above, inside top, below, inside bottom: at the left, then the right corner
    xs = [x1] * 4 + [x2 - w] * 4 + [x1] * 9
    for k in range(1, 4):  # then shifted further up, down, and into the box
        ys += [y1 - h - k * h, y2 + k * h, y1 + k * h]
    cx = np.clip(np.concatenate(xs, 1), 0, np.maximum(w_img - w, 0))  # (N, C)
    cy = np.clip(np.concatenate(ys[:4] * 2 + ys[4:], 1), 0, np.maximum(h_img - h, 0))
    cands = np.stack([cx, cy, cx + w, cy + h], 2)  # (N, C, 4)
    taken = np.zeros((len(avoid) + n, 4), np.int64)
    for j, a in enumerate(avoid):
        taken[j] = np.asarray(a, np.int64).reshape(4)
    m = len(avoid)
    for i in (range(n) if order is None else order):
        c = cands[i]
        if m:
            t = taken[:m]
            ow = np.minimum(c[:, None, 2], t[None, :, 2]) - np.maximum(c[:, None, 0], t[None, :, 0])
            oh = np.minimum(c[:, None, 3], t[None, :, 3]) - np.maximum(c[:, None, 1], t[None, :, 1])
            best = c[int(np.argmin((np.maximum(ow, 0) * np.maximum(oh, 0)).sum(1)))]  # the first free place
        else:
            best = c[0]
        out[i] = best
        taken[m] = best
        m += 1
    return out
