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
    draw: Callable[[np.ndarray, Result], np.ndarray]
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
    # what the gate compares for one image of a deployed model: (spec, the task's raw outputs of that image with the
    # batch axis kept, its result) -> the gate's fields (engines and variants judged against ONNX Runtime)
    sample: Callable[[Any, Sequence[np.ndarray], Any], dict[str, Any]] | None = None
    # per-class probabilities of a batch's raw output, for plots and parity (classifiers only)
    scores: Callable[[Any, np.ndarray], np.ndarray] | None = None
    # how sure the model is of each image of a batch, from its raw outputs: (spec, outputs) -> (N,) floats, larger
    # = surer. The doctor's channel-order probe compares it on the images as deployed and with their red and blue
    # swapped (a model fed the other order than it was trained on is surer swapped). None: no such measure.
    confidence: Callable[[Any, Sequence[np.ndarray]], np.ndarray] | None = None


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
