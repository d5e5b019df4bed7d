"""An HTTP server around one model: predictions over HTTP and, with a video source, a live view in a browser.

``edgeinfer serve model.onnx [--source 0|video.mp4|rtsp://...]`` (or :func:`serve` from Python) runs a
Starlette app on uvicorn, both from the ``edgeinfer[serve]`` extra; ``import edgeinfer`` never imports
them. Why these: both are maintained by Encode and used under FastAPI by most Python model servers, both
are small and pure Python (a device installs them from any wheel index, arm64 included), Starlette
streams responses (MJPEG, server-sent events) and parses multipart forms without a validation layer we
would not use, and any ASGI server can host :func:`create_app` instead of uvicorn. Routes:

* ``POST /predict``: one image, as the raw body (``Content-Type: image/jpeg``, ``image/png``, ...,
  ``application/octet-stream``) or as the file of a ``multipart/form-data`` form; the JSON answer is exactly
  the result's ``to_dict()``, whatever the model's task (the task table decides the result type).
  ``POST /predict/batch``: several files in one form, one model call, a JSON list of ``to_dict()``.
* ``GET /model`` (what ``edgeinfer inspect --json`` prints), ``GET /health``, ``GET /metrics``
  (Prometheus text: requests, latency histogram and percentiles, errors, camera figures, memory).
* with a source: ``GET /stream`` (MJPEG, the annotated frames, for a plain ``<img>``), ``GET /events``
  (server-sent events, one per frame: the result, its stage timings, FPS, dropped frames) and ``GET /``,
  a page showing all of it with a drop-zone to try a photo.

Requests are checked before anything is decoded: the body's size (by its Content-Length, then counted
as it arrives), then the image's sides read from its header (JPEG, PNG, GIF, BMP, WebP, TIFF, PNM); bad
input is a 4xx whose JSON body carries the edgeinfer error's message, never a traceback. Every client,
and the camera loop, share one :class:`~edgeinfer.model.Model` (an ONNX Runtime session runs calls from
several threads at once; the preprocessor's caches are filled idempotently). The camera runs in its own
thread: a slow or lost camera never holds up a request. SIGINT/SIGTERM stop the camera, end the live
streams and let in-flight requests finish before the process exits.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import cv2
import numpy as np

from edgeinfer import tasks
from edgeinfer.pipeline import images
from edgeinfer.pipeline.headers import IMAGE_FORMATS, image_header  # noqa: F401 (IMAGE_FORMATS: documented here)
from edgeinfer.pipeline import ops
from edgeinfer.errors import DependencyError, EdgeInferError, ImageError
from edgeinfer.tools.stream import SourceError, StreamStats, annotate, is_live, stream

try:
    import anyio
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError as exc:  # the extra is not installed
    raise DependencyError(f"edgeinfer serve needs Starlette, uvicorn and python-multipart, which are not installed "
                          f"here ({exc}). Install them with: pip install 'edgeinfer[serve]'") from exc

log = logging.getLogger("edgeinfer.serving.server")

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_SIDE = 8192  # a decoded 8192 x 8192 BGR image is 201 MB; ops.MAX_SIDE (16384) is the hard bound
DEFAULT_MAX_FILES = 32
TOKEN_COOKIE = "edgeinfer_token"
_RAW_TYPES = ("application/octet-stream",)
_CURL_HINT = ("Send the file as the body with its type (curl -H 'Content-Type: image/jpeg' --data-binary "
              "@photo.jpg URL) or as a form (curl -F file=@photo.jpg URL).")


class RequestError(EdgeInferError):
    """An HTTP request the server refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may carry: body bytes, image sides (checked from the header, before decoding),
    files per batch."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_side: int = DEFAULT_MAX_SIDE
    max_files: int = DEFAULT_MAX_FILES

    def __post_init__(self) -> None:
        if not 0 < self.max_bytes <= images.MAX_ENCODED_BYTES:
            raise EdgeInferError(f"max_bytes: expected 1 to {images.MAX_ENCODED_BYTES}, found {self.max_bytes}.")
        if not 0 < self.max_side <= ops.MAX_SIDE:
            raise EdgeInferError(f"max_side: expected 1 to {ops.MAX_SIDE}, found {self.max_side}.")
        if self.max_files < 1:
            raise EdgeInferError(f"max_files: expected at least 1, found {self.max_files}.")


# -- metrics -------------------------------------------------------------------------------------------
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUANTILES = (0.5, 0.9, 0.99)
LATENCY_WINDOW = 4096  # percentiles over the most recent requests of a route: bounded memory


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _resident_bytes() -> int | None:
    """This process's resident memory, from /proc (Linux), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Metrics:
    """Request counts, latency histograms and windows for percentiles, errors. Updated from the event loop
    only (one thread), so plain counters suffice."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests: collections.Counter = collections.Counter()  # (method, route, status)
        self.errors: collections.Counter = collections.Counter()  # (route, error type)
        self.buckets: dict[str, list[int]] = {}
        self.sums: collections.Counter = collections.Counter()
        self.counts: collections.Counter = collections.Counter()
        self.windows: dict[str, collections.deque] = {}
        self.in_flight = 0
        self.images = 0

    def observe(self, route: str, seconds: float) -> None:
        b = self.buckets.setdefault(route, [0] * len(BUCKETS))
        for i, edge in enumerate(BUCKETS):
            if seconds <= edge:
                b[i] += 1
        self.sums[route] += seconds
        self.counts[route] += 1
        self.windows.setdefault(route, collections.deque(maxlen=LATENCY_WINDOW)).append(seconds)

    def render(self, camera: "Camera | None", model: Any) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        family("edgeinfer_requests_total", "counter", "HTTP requests answered, by method, route and status.")
        for (method, route, status), n in sorted(self.requests.items()):
            out.append(f'edgeinfer_requests_total{{method="{method}",route="{_label(route)}",status="{status}"}} {n}')
        family("edgeinfer_errors_total", "counter", "Requests answered with an error, by route and error type.")
        for (route, kind), n in sorted(self.errors.items()):
            out.append(f'edgeinfer_errors_total{{route="{_label(route)}",error="{_label(kind)}"}} {n}')
        family("edgeinfer_request_duration_seconds", "histogram",
               "Time from request to the end of the response (live streams excluded).")
        for route in sorted(self.buckets):
            for edge, n in zip(BUCKETS, self.buckets[route]):
                out.append(f'edgeinfer_request_duration_seconds_bucket{{route="{_label(route)}",le="{edge}"}} {n}')
            out.append(f'edgeinfer_request_duration_seconds_bucket{{route="{_label(route)}",le="+Inf"}} '
                       f'{self.counts[route]}')
            out.append(f'edgeinfer_request_duration_seconds_sum{{route="{_label(route)}"}} {self.sums[route]:.6f}')
            out.append(f'edgeinfer_request_duration_seconds_count{{route="{_label(route)}"}} {self.counts[route]}')
        family("edgeinfer_request_latency_seconds", "summary",
               f"Latency percentiles over the last {LATENCY_WINDOW} requests of each route.")
        for route in sorted(self.windows):
            w = np.fromiter(self.windows[route], dtype=np.float64)
            for q in QUANTILES:
                out.append(f'edgeinfer_request_latency_seconds{{route="{_label(route)}",quantile="{q}"}} '
                           f'{float(np.quantile(w, q)):.6f}')
            out.append(f'edgeinfer_request_latency_seconds_sum{{route="{_label(route)}"}} {self.sums[route]:.6f}')
            out.append(f'edgeinfer_request_latency_seconds_count{{route="{_label(route)}"}} {self.counts[route]}')
        family("edgeinfer_requests_in_flight", "gauge", "Requests being answered now.")
        out.append(f"edgeinfer_requests_in_flight {self.in_flight}")
        family("edgeinfer_images_predicted_total", "counter", "Images predicted for HTTP requests.")
        out.append(f"edgeinfer_images_predicted_total {self.images}")
        if camera is not None:
            c = camera.figures()
            for key, kind, help_ in (("frames", "counter", "Camera frames predicted."),
                                     ("dropped", "counter", "Stale camera frames dropped (the model was busy)."),
                                     ("reconnects", "counter", "Attempts to reopen the source."),
                                     ("errors", "counter", "Source and frame errors."),
                                     ("fps", "gauge", "Frames per second over the last few seconds.")):
                family(f"edgeinfer_camera_{key}{'_total' if kind == 'counter' else ''}", kind, help_)
                out.append(f"edgeinfer_camera_{key}{'_total' if kind == 'counter' else ''} {c[key]}")
            family("edgeinfer_camera_up", "gauge", "1 while the source delivers frames.")
            out.append(f"edgeinfer_camera_up {int(c['state'] == 'running')}")
        family("edgeinfer_model_info", "gauge", "The model served (value 1).")
        out.append(f'edgeinfer_model_info{{path="{_label(model.path)}",task="{model.spec.task}",'
                   f'provider="{_label(model.providers[0])}",engine="{_label(model.engine)}",'
                   f'engine_version="{_label(model.engine_version)}"}} 1')
        rss = _resident_bytes()
        if rss is not None:
            family("process_resident_memory_bytes", "gauge", "Resident memory of the server process.")
            out.append(f"process_resident_memory_bytes {rss}")
        family("process_start_time_seconds", "gauge", "When the server started (Unix time).")
        out.append(f"process_start_time_seconds {self.started:.3f}")
        return "\n".join(out) + "\n"


# -- the camera loop ---------------------------------------------------------------------------------
class _PacedFile:
    """A video file as a live source: frames at the file's own rate, from the start again at its end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.cap = cv2.VideoCapture(path)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.period = 1.0 / fps if 0 < fps < 1000 else 1.0 / 25
        self.due = 0.0

    def isOpened(self) -> bool:  # noqa: N802 - cv2.VideoCapture's name
        return self.cap.isOpened()

    def read(self) -> tuple[bool, Any]:
        ok, frame = self.cap.read()
        if not ok:  # the end: open it again (seeking to frame 0 is unreliable in some containers)
            self.cap.release()
            self.cap = cv2.VideoCapture(self.path)
            ok, frame = self.cap.read()
        now = time.perf_counter()
        if self.due > now:
            time.sleep(self.due - now)
        self.due = max(self.due, time.perf_counter() - self.period) + self.period
        return ok, frame

    def release(self) -> None:
        self.cap.release()


def _open_paced(source: Any) -> _PacedFile | None:
    cap = _PacedFile(str(source))
    return cap if cap.isOpened() else None


@dataclass(frozen=True)
class Snapshot:
    """The newest camera frame as the server shows it: the event (JSON-ready) and the annotated JPEG."""

    version: int
    event: dict[str, Any]
    jpeg: bytes | None


class Camera:
    """The camera loop in a thread of its own: :func:`edgeinfer.tools.stream.stream` on the shared model; the newest
    annotated frame and result are kept for the live view. A source that fails is retried with back-off."""

    def __init__(self, model: Any, source: Any, *, top_k: int = 5, jpeg_quality: int = 80) -> None:
        self.model, self.source, self.top_k, self.jpeg_quality = model, source, top_k, jpeg_quality
        self.live = is_live(source)
        self.state, self.message = "starting", ""
        self.latest: Snapshot | None = None
        self.viewers = 0  # MJPEG clients: frames are JPEG-encoded only while someone watches
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="edgeinfer-camera")
        self._version = 0
        self._recent: collections.deque = collections.deque(maxlen=60)  # publish times, for the FPS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._totals = {"frames": 0, "dropped": 0, "reconnects": 0, "errors": 0}
        self._stats: Any = None
        self._lock = threading.Lock()  # totals and the running stream's stats change together (monotonic counters)

    # -- lifecycle (called from the event loop) ---------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end; it releases the source at its next frame (safe from a signal handler)."""
        self._stop.set()

    def close(self, timeout: float = 5.0) -> bool:
        """Stop and wait for the source to be released; False if it did not answer within ``timeout``."""
        self.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    async def wait(self, version: int, timeout: float) -> None:
        """Return when a snapshot newer than ``version`` exists, or after ``timeout`` seconds."""
        if self.latest is not None and self.latest.version != version:
            return
        assert self._changed is not None
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    # -- figures ------------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        with self._lock:
            st, totals = self._stats, dict(self._totals)
            live = {"frames": st.frames, "dropped": st.dropped, "reconnects": st.reconnects,
                    "errors": st.error_count} if st is not None else dict.fromkeys(totals, 0)
        recent = list(self._recent)
        fps = 0.0
        if len(recent) >= 2 and time.perf_counter() - recent[-1] < 2.0:
            fps = (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)
        return {**{k: totals[k] + live[k] for k in totals}, "fps": round(fps, 2),
                "state": self.state, "message": self.message, "source": str(self.source)}

    # -- the thread ---------------------------------------------------------------------------------
    def _publish(self, frame: np.ndarray | None, result: Any, timing: Any) -> None:
        self._version += 1
        if frame is not None:
            self._recent.append(time.perf_counter())
        fig = self.figures()
        event: dict[str, Any] = {"camera": fig}
        jpeg = None
        if result is not None:
            task = tasks.for_result(result)
            event.update({"frame": timing.index, "task": task.name, "summary": task.summary(result),
                          "result": result.to_dict(), "timing": timing.to_dict()})
            if self.viewers > 0:
                shown = annotate(frame, result, fps=fig["fps"], latency_ms=timing.latency_ms)
                ok, buf = cv2.imencode(".jpg", shown, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                jpeg = buf.tobytes() if ok else None
        elif self.latest is not None:
            jpeg = self.latest.jpeg
        self.latest = Snapshot(self._version, event, jpeg)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _wake(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    def _state(self, state: str, message: str = "") -> None:
        if (state, message) != (self.state, self.message):
            self.state, self.message = state, message
            log.info("camera %s: %s%s", self.source, state, f" ({message})" if message else "")
            self._publish(None, None, None)

    def _run(self) -> None:
        opener: dict[str, Any] = {} if self.live else {"opener": _open_paced}
        delay = 1.0
        while not self._stop.is_set():
            with self._lock:
                self._stats = StreamStats()
            try:
                for frame, result, timing in stream(self.model, self.source, live=True, top_k=self.top_k,
                                                    stats=self._stats, **opener):
                    if self._stop.is_set():
                        break
                    if self.state != "running":
                        self._state("running")
                    delay = 1.0
                    self._publish(frame, result, timing)
                else:
                    if not self._stop.is_set():
                        errors = list(self._stats.errors)
                        self._state("reconnecting", errors[-1] if errors else "the source ended")
            except SourceError as exc:
                self._state("error", str(exc))
            except Exception as exc:  # noqa: BLE001 - the camera must never take the server down
                log.exception("camera loop failed")
                self._state("error", f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    st, self._stats = self._stats, None
                    for key, value in (("frames", st.frames), ("dropped", st.dropped),
                                       ("reconnects", st.reconnects), ("errors", st.error_count)):
                        self._totals[key] += value
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, 30.0)
        self._state("closed")


# -- the app -------------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message}, status_code=status, headers=headers)


class _Middleware:
    """Pure ASGI (streams pass through untouched): the token, the body limit, metrics, in that order."""

    def __init__(self, app: Any, server: "Server") -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        srv, metrics = self.server, self.server.metrics
        route = scope["path"] if scope["path"] in srv.routes else "other"
        t0 = time.perf_counter()
        status = [0]
        metrics.in_flight += 1

        async def send_counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = srv.check_token(scope)
            if refusal is None and scope["method"] == "POST":
                refusal = self._length(scope)
            if refusal is not None:
                scope.setdefault("state", {})["error"] = json.loads(refusal.body)["error"]
                return await refusal(scope, receive, send_counted)
            await self.app(scope, self._counting(receive), send_counted)
        finally:
            metrics.in_flight -= 1
            if not status[0]:  # an exception got past the app: Starlette's error middleware answers 500
                status[0] = 500
                scope.setdefault("state", {}).setdefault("error", "InternalError")
            metrics.requests[(scope["method"], route, status[0])] += 1
            if status[0] >= 400:
                metrics.errors[(route, scope.get("state", {}).get("error", str(status[0])))] += 1
            if route not in ("/stream", "/events"):
                metrics.observe(route, time.perf_counter() - t0)

    def _length(self, scope: dict) -> Response | None:
        limit = self.server.limits.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return _error(413, "RequestError", f"request body: expected at most {limit} bytes, found a "
                              f"Content-Length of {int(value)}. Send a smaller image (or start the server with a "
                              f"larger --max-bytes).")
        return None

    def _counting(self, receive: Callable) -> Callable:
        limit, seen = self.server.limits.max_bytes, [0]

        async def counted() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise RequestError(413, f"request body: expected at most {limit} bytes, found more "
                                            "(a body without Content-Length). Send a smaller image.")
            return message
        return counted


class Server:
    """The state one app serves from: the model, its limits, the token, the camera, the metrics."""

    def __init__(self, model: Any, *, source: Any = None, token: str | None = None, limits: Limits = Limits(),
                 top_k: int = 5, workers: int | None = None) -> None:
        self.model, self.token, self.limits, self.top_k = model, token or None, limits, top_k
        self.camera = Camera(model, source, top_k=top_k) if source is not None else None
        self.metrics = Metrics()
        self.limiter = anyio.CapacityLimiter(workers or min(4, os.cpu_count() or 1))
        self.closing = threading.Event()  # set by a signal: live streams end so the shutdown can finish
        self.routes: set[str] = set()

    # -- access -------------------------------------------------------------------------------------
    def _token_of(self, scope: dict) -> str | None:
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE:
                return value
        from urllib.parse import parse_qs

        found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return found[0] if found else None

    def check_token(self, scope: dict) -> Response | None:
        """None when the request may proceed; else the 401 answer."""
        if self.token is None:
            return None
        given = self._token_of(scope)
        challenge = {"WWW-Authenticate": 'Bearer realm="edgeinfer"'}
        if given is None:
            return _error(401, "Unauthorized", "expected an access token (header 'Authorization: Bearer TOKEN', or "
                          "?token=TOKEN on the page's address), found none. The server was started with --token.",
                          challenge)
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return _error(401, "Unauthorized", "expected the server's access token, found a token that does not "
                          "match. Use the value given to --token (or EDGEINFER_TOKEN).", challenge)
        return None

    # -- images -------------------------------------------------------------------------------------
    def check_sizes(self, uploads: list[tuple[str, bytes]]) -> None:
        """Refuse, from their headers alone, images with a side over ``max_side`` and batches whose pixels
        add up to more than one such image (so a batch never decodes more than a single large image)."""
        side, total = self.limits.max_side, 0
        for source, data in uploads:
            fmt, w, h = image_header(data, source=source)
            if w > side or h > side:
                raise RequestError(413, f"{source}: expected an image of at most {side} x {side} pixels, found a "
                                        f"{fmt} of {w} x {h}. Resize it first (or start the server with a larger "
                                        f"--max-side, up to {ops.MAX_SIDE}).")
            total += w * h
        if total > side * side:
            raise RequestError(413, f"batch: expected at most {side * side} pixels in all ({side} x {side}), found "
                                    f"{total} in {len(uploads)} images. Send fewer or smaller images per request.")

    def decode(self, data: bytes, source: str) -> np.ndarray:
        """The BGR frame of one uploaded image (sizes already checked by :meth:`check_sizes`)."""
        return images.decode(data, **images.loader_options(self.model.spec.decode), source=source)

    async def uploads(self, request: Request, *, many: bool) -> list[tuple[str, bytes]]:
        """(name, bytes) of the images in a request: the raw body, or the files of a multipart form."""
        ctype = request.headers.get("content-type", "")
        base = ctype.split(";")[0].strip().lower()
        if base == "multipart/form-data":
            form = await request.form(max_files=self.limits.max_files, max_fields=self.limits.max_files,
                                      max_part_size=64 * 1024)
            try:
                files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
            finally:
                await form.close()
            if not files:
                raise RequestError(400, "form: expected at least one file part (an image), found only "
                                        f"{len(form)} plain field(s). {_CURL_HINT}")
            if not many and len(files) > 1:
                raise RequestError(400, f"form: expected one image, found {len(files)}. Use POST /predict/batch "
                                        "for several.")
            return files
        if not many and (base.startswith("image/") or base in _RAW_TYPES):
            body = await request.body()
            return [("request body", body)]
        wanted = "multipart/form-data" if many else "image/*, application/octet-stream or multipart/form-data"
        raise RequestError(415, f"Content-Type: expected {wanted}, found {ctype or 'none'!r}. {_CURL_HINT}")

    def top_k_of(self, request: Request) -> int:
        raw = request.query_params.get("top_k")
        if raw is None:
            return self.top_k
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise RequestError(400, f"top_k: expected an integer from 1 to 1000, found {raw!r}.")
        return int(raw)

    async def predict(self, uploads: list[tuple[str, bytes]], top_k: int) -> tuple[list[Any], dict[str, float]]:
        """Results of the uploaded images (decoded and predicted in a worker thread) and stage times."""
        def work() -> tuple[list[Any], dict[str, float]]:
            t0 = time.perf_counter()
            self.check_sizes(uploads)
            frames = [self.decode(data, name) for name, data in uploads]
            t1 = time.perf_counter()
            if len(frames) == 1:  # exactly Model.predict
                results = [self.model.predict(frames[0], top_k=top_k)]
            else:
                results = self.model.predict_batch(frames, top_k=top_k)
            return results, {"decode": (t1 - t0) * 1e3, "predict": (time.perf_counter() - t1) * 1e3}
        return await anyio.to_thread.run_sync(work, limiter=self.limiter)


def _answer(results: list[Any], timing: dict[str, float], many: bool) -> JSONResponse:
    summary = "; ".join(tasks.for_result(r).summary(r) for r in results)
    headers = {"Server-Timing": ", ".join(f"{k};dur={v:.2f}" for k, v in timing.items()),
               "X-Edgeinfer-Summary": quote(summary[:2000], safe=" ,;:[]().")}
    body = [r.to_dict() for r in results] if many else results[0].to_dict()
    return JSONResponse(body, headers=headers)


def create_app(model: Any, *, source: Any = None, token: str | None = None, limits: Limits = Limits(),
               top_k: int = 5, workers: int | None = None) -> Any:
    """The ASGI app serving ``model`` (and, with ``source``, its camera loop); run it with any ASGI server.

    ``app.state.server`` is the :class:`Server` behind it.
    """
    from contextlib import asynccontextmanager


    srv = Server(model, source=source, token=token, limits=limits, top_k=top_k, workers=workers)
    task = tasks.get(model.spec.task)

    async def predict_one(request: Request) -> Response:
        uploads = await srv.uploads(request, many=False)
        results, timing = await srv.predict(uploads, srv.top_k_of(request))
        srv.metrics.images += 1
        return _answer(results, timing, many=False)

    async def predict_batch(request: Request) -> Response:
        uploads = await srv.uploads(request, many=True)
        results, timing = await srv.predict(uploads, srv.top_k_of(request))
        srv.metrics.images += len(results)
        return _answer(results, timing, many=True)

    async def model_info(request: Request) -> Response:
        return JSONResponse(model.to_dict())

    async def health(request: Request) -> Response:
        cam = srv.camera.figures() if srv.camera is not None else None
        ok = cam is None or cam["state"] in ("running", "starting")
        return JSONResponse({"status": "ok" if ok else "degraded", "model": model.path, "task": task.name,
                             "engine": model.engine, "engine_version": model.engine_version,
                             "providers": list(model.providers),
                             "uptime_s": round(time.time() - srv.metrics.started, 3),
                             "camera": cam})

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(srv.metrics.render(srv.camera, model),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    def need_camera() -> Camera:
        if srv.camera is None:
            raise RequestError(404, "no live source: this server was started without --source. Start it with "
                                    "--source 0 (a camera), a video file or an rtsp:// URL.")
        return srv.camera

    async def mjpeg(request: Request) -> Response:
        cam = need_camera()

        async def frames():
            cam.viewers += 1
            try:
                seen = -1
                while not srv.closing.is_set():
                    snap = cam.latest
                    if snap is not None and snap.version != seen and snap.jpeg is not None:
                        seen = snap.version
                        yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(snap.jpeg)
                               + snap.jpeg + b"\r\n")
                    else:
                        await cam.wait(seen, 0.5)
            finally:
                cam.viewers -= 1
        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        cam = need_camera()

        async def messages():
            seen, quiet = -1, time.perf_counter()
            yield "retry: 1000\n\n"
            while not srv.closing.is_set():
                snap = cam.latest
                if snap is not None and snap.version != seen:
                    seen, quiet = snap.version, time.perf_counter()
                    yield f"data: {json.dumps(snap.event)}\n\n"
                else:
                    if time.perf_counter() - quiet > 15:  # a comment keeps proxies from closing an idle stream
                        quiet = time.perf_counter()
                        yield ": idle\n\n"
                    await cam.wait(seen, 0.5)
        return StreamingResponse(messages(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    page_template = (Path(__file__).with_name("serve.html")).read_text(encoding="utf-8")

    async def page(request: Request) -> Response:
        config = {"model": Path(model.path).name, "task": task.name, "source": None if srv.camera is None
                  else str(srv.camera.source), "max_bytes": srv.limits.max_bytes}
        html = page_template.replace("__EDGEINFER_CONFIG__", json.dumps(config).replace("</", "<\\/"))
        response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
        given = request.query_params.get("token")
        if srv.token is not None and given is not None:  # the page's stream and events then carry it
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
        return response

    async def refuse(request: Request, exc: Exception) -> Response:
        headers = None
        if isinstance(exc, RequestError):
            status, kind, message = exc.status, type(exc).__name__, str(exc)
        elif isinstance(exc, ImageError):
            status, kind, message = 422, type(exc).__name__, str(exc)
        elif isinstance(exc, EdgeInferError):
            status, kind, message = 400, type(exc).__name__, str(exc)
        elif isinstance(exc, HTTPException):
            status, headers = exc.status_code, exc.headers
            kind, message = {
                404: ("NotFound", f"no route {request.method} {request.url.path}; routes: "
                                  f"{', '.join(sorted(srv.routes))}."),
                405: ("MethodNotAllowed", f"{request.method} {request.url.path}: expected "
                                          f"{(exc.headers or {}).get('Allow', 'another method')}, found "
                                          f"{request.method}."),
            }.get(status, ("HTTPError", str(exc.detail)))
        else:
            status, kind = 500, "InternalError"
            message = f"internal error ({type(exc).__name__}); the server's log has the details."
        request.scope.setdefault("state", {})["error"] = kind
        return _error(status, kind, message, headers)

    @asynccontextmanager
    async def lifespan(app: Any):
        if srv.camera is not None:
            srv.camera.start()
        try:
            yield
        finally:
            srv.closing.set()
            if srv.camera is not None:
                closed = await anyio.to_thread.run_sync(srv.camera.close)
                log.info("camera closed" if closed else
                         "camera did not stop within 5 s (a source that never answered); leaving it")

    routes = [Route("/", page), Route("/predict", predict_one, methods=["POST"]),
              Route("/predict/batch", predict_batch, methods=["POST"]), Route("/model", model_info),
              Route("/health", health), Route("/metrics", metrics), Route("/stream", mjpeg),
              Route("/events", events)]
    srv.routes = {r.path for r in routes}
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={Exception: refuse, HTTPException: refuse, EdgeInferError: refuse})
    app.state.server = srv
    app.add_middleware(_Middleware, server=srv)
    return app


class _Uvicorn(uvicorn.Server):
    """uvicorn, with a signal that also ends the live streams and stops the camera at once: the streams
    would otherwise hold their connections open and the graceful shutdown would wait for ever."""

    def __init__(self, config: Any, server: Server) -> None:
        super().__init__(config)
        self.edgeinfer = server

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.edgeinfer.closing.set()
        if self.edgeinfer.camera is not None:
            self.edgeinfer.camera.stop()
        super().handle_exit(sig, frame)


def serve(model: Any, *, host: str = "127.0.0.1", port: int = 8000, source: Any = None, token: str | None = None,
          allow_no_token: bool = False, limits: Limits = Limits(), top_k: int = 5, workers: int | None = None,
          log_level: str = "info", access_log: bool = False) -> None:
    """Serve ``model`` over HTTP until SIGINT or SIGTERM (then: camera closed, in-flight requests finished).

    Listening beyond loopback needs a ``token`` (or ``allow_no_token=True``, to say so on purpose).
    """
    if not is_loopback(host) and not token and not allow_no_token:
        raise EdgeInferError(f"host {host!r}: listening beyond this machine exposes the model and the camera to "
                             "the network; expected an access token, found none. Give --token (or set "
                             "EDGEINFER_TOKEN), or --no-token to allow anyone who can reach the port.")
    if source is not None and not (isinstance(source, int) or str(source).isdigit()):
        if not is_live(source) and not Path(str(source)).is_file():
            raise EdgeInferError(f"source {source!r}: expected a camera index, a video file or a stream URL "
                                 "(rtsp://, http://), found no such file.")
    app = create_app(model, source=source, token=token, limits=limits, top_k=top_k, workers=workers)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=30, lifespan="on")
    _Uvicorn(config, app.state.server).run()
