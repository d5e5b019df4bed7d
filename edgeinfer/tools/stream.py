"""Camera loops and video files: capture, preprocessing and inference overlapped, nothing stale.

``stream(model, source)`` yields ``(frame, prediction, timing)``. A capture thread reads frames; for live
sources (a camera index, rtsp/http URLs) it keeps only the newest frame, so a slow model never builds a
backlog of stale frames (they are counted as dropped); for files it reads every frame and waits for the
consumer. A second thread preprocesses while the caller's thread runs inference (ONNX Runtime releases
the GIL), so the three stages overlap. Where the engine has an asynchronous API (``Model.submit``: OpenVINO's
infer requests), several frames are in the engine at once, so inference also overlaps the decoding of the
frame before it and whatever the caller does with its result; results still come in order. A live source
that stops delivering is reopened with exponential back-off and reported; it never hangs. Ctrl-C and the end of a file end the loop cleanly.
"""

from __future__ import annotations

import os
import queue
import sys
from pathlib import Path
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from edgeinfer.errors import EdgeInferError, ImageError
from edgeinfer.pipeline import images
from edgeinfer.pipeline.preprocess import Prepared

_END = object()


class SourceError(EdgeInferError):
    """A video source could not be opened, or was lost and did not come back."""


@dataclass(frozen=True)
class Timing:
    """Per-frame figures, in milliseconds; ``latency`` runs from capture to prediction."""

    index: int
    capture_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    latency_ms: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


KEEP_TIMINGS = 10_000  # a loop runs for weeks: keep recent figures only, never an ever-growing list
KEEP_ERRORS = 100


@dataclass
class StreamStats:
    """Filled in while the stream runs; final when the loop ends. Memory stays bounded: the most recent
    ``KEEP_TIMINGS`` timings and ``KEEP_ERRORS`` error messages are kept (``error_count`` counts all)."""

    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    error_count: int = 0
    errors: deque = field(default_factory=lambda: deque(maxlen=KEEP_ERRORS))
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    timings: deque = field(default_factory=lambda: deque(maxlen=KEEP_TIMINGS))

    def error(self, message: str) -> None:
        self.error_count += 1
        self.errors.append(message)

    @property
    def fps(self) -> float:
        end = self.ended if self.ended is not None else time.perf_counter()
        return self.frames / max(end - self.started, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        def stage(name: str) -> dict[str, float]:
            v = np.asarray([getattr(t, name) for t in self.timings]) if self.timings else np.zeros(1)
            return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90))}
        return {"frames": self.frames, "dropped": self.dropped, "reconnects": self.reconnects,
                "error_count": self.error_count, "errors": list(self.errors),
                "fps": self.fps, **{k: stage(k) for k in ("capture_ms", "preprocess_ms", "inference_ms",
                                                          "postprocess_ms", "latency_ms")}}


class _Buffers:
    """Arrays handed out again once nothing outside this pool holds them.

    A camera loop then stops allocating (and page-faulting) a fresh frame and a fresh model input every
    time, and a frame the caller kept (or a view of it) is never overwritten: it is simply not reused.
    Each pool belongs to one thread.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.items: list[np.ndarray] = []

    def get(self, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        for a in self.items:
            # references: the list, the loop variable and getrefcount's argument -- nobody else
            if a.shape == shape and a.dtype == dtype and sys.getrefcount(a) == 3:
                return a
        a = np.empty(shape, dtype)
        if len(self.items) >= self.keep:
            self.items.pop(0)
        self.items.append(a)
        return a


def is_live(source: Any) -> bool:
    """Camera indices and network streams are live; files are not."""
    return isinstance(source, int) or (isinstance(source, str) and source.isdigit()) or (
        isinstance(source, str) and source.split("://")[0].lower() in ("rtsp", "rtmp", "http", "https", "udp"))


def _open(source: Any) -> Any:
    src = int(source) if isinstance(source, str) and source.isdigit() else source
    if isinstance(src, (str, os.PathLike)) and Path(src).suffix.lower() in images.IMAGE_SUFFIXES and Path(src).is_file():
        # OpenCV opens a still image with imread: its size is checked from the header first (a bomb is refused)
        images.check_size(Path(src).read_bytes(), source=str(src))
    cap = cv2.VideoCapture(src if isinstance(src, int) else str(src))
    return cap if cap.isOpened() else None


class _Capture(threading.Thread):
    def __init__(self, source: Any, live: bool, stats: StreamStats, stop: threading.Event, *, retries: int,
                 backoff: float, opener: Callable[[Any], Any]) -> None:
        super().__init__(daemon=True, name="edgeinfer-capture")
        self.source, self.live, self.stats, self.stop = source, live, stats, stop
        self.retries, self.backoff, self.opener = retries, backoff, opener
        self.out: queue.Queue = queue.Queue(maxsize=1 if live else 4)
        # enough for every frame in flight: the queue, the preprocessor, the model, the caller
        self.buffers = _Buffers(keep=12)

    def _put(self, item: Any) -> None:
        if self.live and item is not _END:
            try:  # keep only the newest frame: a stale one waiting is dropped
                self.out.get_nowait()
                self.stats.dropped += 1
            except queue.Empty:
                pass
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _open(self) -> Any:
        try:
            return self.opener(self.source)
        except EdgeInferError as exc:  # a refused still image: the loop ends with its reason, never hangs
            self.stats.error(str(exc))
            return None

    def run(self) -> None:
        cap, index, failures = self._open(), 0, 0
        shape = None
        if cap is None:
            self.stats.error(f"could not open source {self.source!r}")
        try:
            while not self.stop.is_set():
                if cap is not None:
                    t0 = time.perf_counter()
                    if shape is not None and isinstance(cap, cv2.VideoCapture):
                        # decode into a frame nobody holds any more (OpenCV reallocates if the size changed)
                        ok, frame = cap.read(self.buffers.get(shape))
                    else:
                        ok, frame = cap.read()
                    if ok and frame is not None:
                        failures = 0
                        shape = frame.shape
                        self._put((index, frame, time.perf_counter(), (time.perf_counter() - t0) * 1e3))
                        index += 1
                        continue
                    cap.release()
                    cap = None
                    if not self.live:
                        break  # end of file
                    self.stats.error(f"frame {index}: source stopped delivering")
                if not self.live or failures >= self.retries:
                    if self.live:
                        self.stats.error(f"gave up after {failures} reconnection attempts")
                    break
                time.sleep(self.backoff * (2 ** failures))
                failures += 1
                self.stats.reconnects += 1
                cap = self._open()
        finally:
            if cap is not None:
                cap.release()
            self._put(_END)


def stream(model: Any, source: Any, *, live: bool | None = None, max_frames: int | None = None, top_k: int = 5,
           conf: float | None = None, retries: int = 5, backoff: float = 0.5, stats: StreamStats | None = None,
           opener: Callable[[Any], Any] = _open, inflight: int = 2) -> Iterator[tuple[np.ndarray, Any, Timing]]:
    """Yield ``(frame, result, timing)`` for each frame of ``source`` (camera index, file or URL); the
    result is the model's task's (:class:`~edgeinfer.tasks.classification.Prediction`, or
    :class:`~edgeinfer.tasks.detections.Detections` in the frame's own pixels).

    ``conf`` overrides a detector's confidence threshold (the spec's, else the tool's default 0.25), as
    ``predict(conf=...)``. Pass a :class:`StreamStats` to read FPS, per-stage latency, dropped frames and reconnections,
    during and after the loop. Raises :class:`SourceError` when the source never delivers a frame.

    ``inflight``: where the engine runs the graph asynchronously (``model.overlaps``: OpenVINO), up to this many
    frames are in it at once, so inference overlaps capture, preprocessing and the decoding of the frame before
    (and whatever the caller does with it); results come in frame order and equal the sequential loop's. A live
    source then holds up to ``inflight - 1`` more frames between capture and result (higher FPS, a little more
    latency). ``inflight=1``, and engines without an asynchronous API, run inference in this thread, one frame at
    a time. Overlapped, ``Timing.inference_ms`` is the engine's time on the frame: from when it could start it
    (submitted, and the frame ahead of it done) to done, so the frames' figures add up to the engine's busy time;
    ``latency_ms`` still runs from capture to result.
    """
    if isinstance(inflight, bool) or not isinstance(inflight, int) or inflight < 1:
        raise ValueError(f"stream: inflight is how many frames may be in the engine at once; expected an int >= 1, "
                         f"found {inflight!r}. Use 1 for one frame at a time.")
    stats = stats if stats is not None else StreamStats()
    stop = threading.Event()
    capture = _Capture(source, is_live(source) if live is None else live, stats, stop, retries=retries,
                       backoff=backoff, opener=opener)
    prepared: queue.Queue = queue.Queue(maxsize=2)
    c, h, w = model.spec.input.channels, *model.spec.input.height_width
    # each engine request may keep the last input it read (OpenVINO's shared input tensor), the rest are in the
    # queue, in the preprocessor, in flight: enough for all of them, so none is allocated afresh per frame
    inputs = _Buffers(keep=4 + inflight)

    def prepare() -> None:
        while not stop.is_set():
            try:  # not a blocking get: a capture thread told to stop may end without handing over _END
                item = capture.out.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                break
            index, frame, captured, capture_ms = item
            t = time.perf_counter()
            try:
                if h is None or w is None:  # a dynamic-size model: the frame decides the input size
                    x = model.preprocessor.batch([frame])
                else:  # straight from the capture buffer into a reused model input
                    x = inputs.get((1, c, h, w), np.float32)
                    model.preprocessor(frame, out=x[0])
            except ImageError as exc:
                stats.error(f"frame {index}: {exc}")
                continue
            payload = (index, frame, captured, capture_ms, (time.perf_counter() - t) * 1e3, x)
            while not stop.is_set():
                try:
                    prepared.put(payload, timeout=0.1)
                    break
                except queue.Full:
                    continue
        while not stop.is_set():
            try:
                prepared.put(_END, timeout=0.1)
                return
            except queue.Full:
                continue

    worker = threading.Thread(target=prepare, daemon=True, name="edgeinfer-preprocess")
    # frames in flight in the engine: more than one only where it runs the graph while this thread goes on
    depth = inflight if model.overlaps else 1
    pending: deque = deque()  # (handle, index, frame, captured, capture_ms, pre_ms, Prepared), oldest first
    last_done = float("-inf")
    stats.started = time.perf_counter()
    capture.start()
    worker.start()
    try:
        submitted, ended = 0, False
        while True:
            if not ended and len(pending) < depth and (max_frames is None or submitted < max_frames):
                try:  # with frames in flight, never wait for a new one while an older result could be given
                    item = prepared.get() if not pending else prepared.get_nowait()
                except queue.Empty:
                    item = None
                if item is _END:
                    ended = True
                elif item is not None:
                    index, frame, captured, capture_ms, pre_ms, x = item
                    del item  # the payload's reference would keep x from being reused once the engine is done
                    prepared_frame = Prepared(x, [frame.shape[:2]])
                    pending.append((model.submit(prepared_frame), index, frame, captured, capture_ms, pre_ms,
                                    prepared_frame))
                    del x, prepared_frame
                    submitted += 1
                    continue
            if not pending:
                break
            handle, index, frame, captured, capture_ms, pre_ms, prepared_frame = pending.popleft()
            outputs = handle.wait()
            t2 = time.perf_counter()
            # the task's own decoding: top-k for a classifier, boxes back in this frame for a detector
            pred = model.finish(prepared_frame, outputs, top_k=top_k, conf=conf)[0]
            t3 = time.perf_counter()
            # the engine's time on this frame: from when it could start it (submitted, and the frame ahead of it
            # done) to done; sequentially submit -> outputs, overlapped the frames' sum is the engine's busy time
            infer_ms = (handle.done - max(handle.submitted, last_done)) * 1e3
            last_done = handle.done
            del handle, prepared_frame, outputs
            timing = Timing(index, capture_ms, pre_ms, infer_ms, (t3 - t2) * 1e3, (t3 - captured) * 1e3)
            stats.frames += 1
            stats.timings.append(timing)
            yield frame, pred, timing
    finally:
        stats.ended = time.perf_counter()
        stop.set()
        while pending:  # frames still in the engine: let them finish, so no request reads a buffer reused later
            try:
                pending.popleft()[0].wait()
            except Exception:  # the loop is ending (an error, a break): what it would have said is moot now
                pass
        capture.join(timeout=5)
        worker.join(timeout=5)
    if stats.frames == 0 and stats.errors:
        raise SourceError(f"source {source!r}: no frame was delivered ({'; '.join(list(stats.errors)[:3])}). Check the "
                          "camera index, the file path or the stream URL.")


def annotate(frame: np.ndarray, pred: Any, *, fps: float, latency_ms: float) -> np.ndarray:
    """A copy of a BGR frame with the result drawn as its task draws it (label and score; boxes, labels and
    keypoints), and FPS and latency on a filled strip in the bottom-left corner that the labels keep off."""
    from edgeinfer import tasks

    out = frame.copy()
    text = f"{fps:.1f} FPS  {latency_ms:.1f} ms"
    status = status_rect(text, frame.shape[:2])
    out = tasks.for_result(pred).draw(out, pred, avoid=[status])
    tasks.put_label(out, text, status, (0, 0, 0))
    return out


def status_rect(text: str, frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where :func:`annotate` puts its status line: x1, y1, x2, y2 in the bottom-left corner of the frame."""
    from edgeinfer import tasks

    h, w = frame_hw
    tw, th = tasks.label_size(text, w)
    margin = max(2, w // 160)
    return margin, max(h - margin - th, 0), min(margin + tw, w), max(h - margin, th)
