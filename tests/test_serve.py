"""``edgeinfer serve``: the real server (a subprocess, as a user starts it) on a free loopback port, used
over HTTP; its page in a real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgeinfer
from edgeinfer import tasks

SKIMAGE = Path(__import__("skimage").__file__).parent / "data"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
LOG_DIR_ENV = "EDGEINFER_SERVE_TEST_LOGS"


# -- the server as a user runs it -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``python -m edgeinfer serve ...`` on a free loopback port, with HTTP helpers."""

    def __init__(self, model: Path, *args: str, log: Path, timeout: float = 180) -> None:
        self.port = _free_port()
        self.log_path = log
        self.log_file = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeinfer", "serve", str(model), "--port", str(self.port),
                                      *args], stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the server exited:\n{self.log()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"the server did not listen within {timeout} s:\n{self.log()}"
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 120) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, object]:
        status, head, data = self.request(method, path, body, headers)
        assert head["content-type"].startswith("application/json"), (status, head, data[:200])
        return status, json.loads(data)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the server did not stop within {timeout} s:\n{self.log()}")
        self.log_file.close()
        return self.proc.returncode


def multipart(files: list[tuple[str, bytes, str]], fields: dict[str, str] | None = None) -> tuple[bytes, dict]:
    """A multipart/form-data body (what a browser's form or curl -F sends) and its Content-Type header."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, data, ctype in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _ctype(path: Path) -> str:
    return {".jpg": "image/jpeg", ".png": "image/png"}[path.suffix]


@pytest.fixture(scope="module")
def classifier(exported) -> Path:
    return exported["resnet18"][1]


@pytest.fixture(scope="module")
def video(tmp_path_factory, photos) -> Path:
    """A real MPEG-4 file made of the bundled photos, 8 frames each at 10 frames per second."""
    path = tmp_path_factory.mktemp("serve-video") / "photos.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for name in PHOTOS:
        frame = cv2.resize(np.ascontiguousarray(photos[name][..., ::-1]), (320, 240), interpolation=cv2.INTER_AREA)
        for _ in range(8):
            writer.write(frame)
    writer.release()
    assert cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT) == 8 * len(PHOTOS)
    return path


@pytest.fixture(scope="module")
def live_server(classifier, video, tmp_path_factory):
    """The classifier with the video as its live source; small limits, to test them cheaply."""
    s = Served(classifier, "--source", str(video), "--max-bytes", str(3 * 1024 * 1024), "--max-side", "4000",
               log=tmp_path_factory.mktemp("serve-log") / "live.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """The committed shape detector (tests/data/detectors/shapes), exported by Ultralytics' own exporter."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from tests.material import shapes

    return shapes.export(shapes.train("detect"), tmp_path_factory.mktemp("serve-det"), variants=["raw"])["raw"]


@pytest.fixture(scope="module")
def detector_frames(tmp_path_factory) -> list[Path]:
    from tests.material import shapes

    folder = tmp_path_factory.mktemp("serve-det-frames")
    out = []
    for name, f in shapes.test_frames("detect").items():
        cv2.imwrite(str(folder / f"{name}.png"), f.image)
        out.append(folder / f"{name}.png")
    return out


class _Silent:
    """A "camera" at an http:// URL that accepts the connection and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/video.mjpg"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


TOKEN = "s3cret-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def guarded_server(detector, tmp_path_factory):
    """The detector behind a token, its live source a camera that never answers."""
    silent = _Silent()
    s = Served(detector, "--token", TOKEN, "--source", silent.url, log=tmp_path_factory.mktemp("serve-log") / "det.log")
    yield s, silent
    s.stop()
    silent.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- image headers, without a server ------------------------------------------------------------------
def _encodings(photo: np.ndarray) -> dict[str, bytes]:
    from PIL import Image
    import io

    out = {}
    for ext, params in ((".png", []), (".jpg", []), (".jpg-progressive", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                        (".bmp", []), (".webp", []), (".webp-lossless", [cv2.IMWRITE_WEBP_QUALITY, 101]),
                        (".tiff", []), (".ppm", []), (".pgm", [])):
        img = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY) if ext == ".pgm" else photo
        ok, buf = cv2.imencode(ext.split("-")[0], img, params)
        assert ok, ext
        out[ext] = buf.tobytes()
    gif = io.BytesIO()
    Image.fromarray(photo[..., ::-1]).save(gif, format="GIF")
    out[".gif"] = gif.getvalue()
    return out


def test_image_header_gives_the_decoded_size_of_real_files_in_every_format(photo_files):
    from edgeinfer.serving.server import image_header

    checked = 0
    for path in photo_files + [SKIMAGE / "multipage.tif", SKIMAGE / "no_time_for_that_tiny.gif"]:
        data = path.read_bytes()
        _, w, h = image_header(data)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert (h, w) == decoded.shape[:2], path.name
        checked += 1
    photo = cv2.imread(str(SKIMAGE / "astronaut.png"))[:301, :457]  # odd sides: no accidental symmetry
    for kind, data in _encodings(photo).items():
        fmt, w, h = image_header(data)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert (h, w) == decoded.shape[:2] == (301, 457), (kind, fmt)
        checked += 1
    assert checked >= 18


def test_image_header_refuses_what_it_cannot_size():
    from edgeinfer.errors import ImageError
    from edgeinfer.serving.server import image_header

    png = (SKIMAGE / "chelsea.png").read_bytes()
    jpeg = (SKIMAGE / "rocket.jpg").read_bytes()
    with pytest.raises(ImageError, match="none of them"):
        image_header(b"%PDF-1.7 not an image at all")
    with pytest.raises(ImageError, match="cut-off"):
        image_header(png[:20])  # the PNG signature, the size missing
    with pytest.raises(ImageError, match="cut-off"):
        image_header(jpeg[:200])  # a JPEG cut before its frame header
    h, w = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    assert image_header(jpeg[:4096]) == ("JPEG", w, h)  # the header is enough: the pixels are not needed


def test_import_edgeinfer_does_not_import_the_server_stack():
    code = ("import sys, edgeinfer, edgeinfer.cli; edgeinfer.cli.build_parser(); "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'anyio', 'multipart') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- predictions over HTTP ------------------------------------------------------------------------------
@pytest.mark.slow
def test_classifier_predictions_over_http_equal_model_predict(live_server, classifier, photo_files):
    model = edgeinfer.load(classifier)
    for path in photo_files:
        want = model.predict(path).to_dict()
        status, got = live_server.json("POST", "/predict", path.read_bytes(), {"Content-Type": _ctype(path)})
        assert status == 200 and got == want, path.name
        body, head = multipart([(path.name, path.read_bytes(), _ctype(path))], {"note": "a plain field is ignored"})
        assert live_server.json("POST", "/predict", body, head) == (200, want)
    path = photo_files[0]
    status, got = live_server.json("POST", "/predict?top_k=2", path.read_bytes(), {"Content-Type": "image/png"})
    assert status == 200 and got == model.predict(path, top_k=2).to_dict() and len(got["top_k"]) == 2
    status, head, _ = live_server.request("POST", "/predict", path.read_bytes(), {"Content-Type": "image/png"})
    summary = tasks.get("classification").summary(model.predict(path))
    from urllib.parse import unquote

    assert unquote(head["x-edgeinfer-summary"]) == summary and "predict;dur=" in head["server-timing"]

    body, head = multipart([(p.name, p.read_bytes(), _ctype(p)) for p in photo_files[:4]])
    status, got = live_server.json("POST", "/predict/batch", body, head)
    assert status == 200 and got == [r.to_dict() for r in model.predict_batch(photo_files[:4])]


@pytest.mark.slow
def test_detector_predictions_over_http_equal_model_predict(guarded_server, detector, detector_frames):
    server, _ = guarded_server
    model = edgeinfer.load(detector)
    found = 0
    for path in detector_frames:
        want = model.predict(path).to_dict()
        status, got = server.json("POST", "/predict", path.read_bytes(), {"Content-Type": "image/png", **AUTH})
        assert status == 200 and got == want, path.name
        found += len(got["detections"])
    assert found >= len(detector_frames)  # the trained detector finds the drawn shapes
    body, head = multipart([(p.name, p.read_bytes(), "image/png") for p in detector_frames])
    status, got = server.json("POST", "/predict/batch", body, {**head, **AUTH})
    assert status == 200 and got == [r.to_dict() for r in model.predict_batch(detector_frames)]


@pytest.mark.slow
def test_sixteen_clients_at_once_share_the_model_and_get_their_own_answers(live_server, classifier, photo_files):
    model = edgeinfer.load(classifier)
    want = {p: model.predict(p).to_dict() for p in photo_files}
    wrong: list = []

    def client(k: int) -> None:
        for j in range(4):
            p = photo_files[(k + j) % len(photo_files)]
            status, got = live_server.json("POST", "/predict", p.read_bytes(), {"Content-Type": _ctype(p)})
            if status != 200 or got != want[p]:
                wrong.append((k, p.name, status))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


# -- every way a request can be wrong ---------------------------------------------------------------------
def _raw(port: int, head: bytes, chunks: list[bytes]) -> tuple[int, dict]:
    """Send a request by hand (a lying Content-Length, a chunked body) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head)
        for c in chunks:
            s.sendall(c)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head_part, body = data.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in head_part.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += s.recv(65536)
    return int(head_part.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.slow
def test_every_bad_request_gets_its_4xx_and_the_edgeinfer_message(live_server, photo_files, tmp_path):
    s = live_server
    png = (SKIMAGE / "chelsea.png").read_bytes()

    def expect(status, fragment, *request):
        got_status, got = s.json(*request)
        assert got_status == status and fragment in got["message"], (request[:2], got)
        assert "Traceback" not in got["message"]
        return got

    expect(415, "found 'text/plain'", "POST", "/predict", png, {"Content-Type": "text/plain"})
    expect(415, "found 'application/x-www-form-urlencoded'", "POST", "/predict", png,
           {"Content-Type": "application/x-www-form-urlencoded"})
    expect(415, "expected multipart/form-data", "POST", "/predict/batch", png, {"Content-Type": "image/png"})
    expect(422, "none of them", "POST", "/predict", b"GIF? no: plain text pretending", {"Content-Type": "image/gif"})
    # a real PNG header over a damaged body: sized, then refused by the decoder (edgeinfer.pipeline.images.decode)
    broken = png[:33] + bytes(len(png) - 33)
    got = expect(422, "cannot decode", "POST", "/predict", broken, {"Content-Type": "image/png"})
    assert got["error"] == "ImageError"
    expect(400, "expected at least one file part", "POST", "/predict", *multipart([], {"just": "a field"}))
    expect(400, "Use POST /predict/batch", "POST", "/predict",
           *multipart([("a.png", png, "image/png"), ("b.png", png, "image/png")]))
    expect(400, "top_k: expected an integer", "POST", "/predict?top_k=lots", png, {"Content-Type": "image/png"})
    expect(404, "no route GET /nowhere", "GET", "/nowhere")
    expect(405, "expected POST", "GET", "/predict")

    # too many pixels: a 4001 x 30 PNG is small in bytes; its header is read, it is never decoded
    tall = cv2.imencode(".png", np.zeros((30, 4001, 3), np.uint8))[1].tobytes()
    got = expect(413, "found a PNG of 4001 x 30", "POST", "/predict", tall, {"Content-Type": "image/png"})
    assert got["error"] == "RequestError"
    # a batch may not decode more pixels than one largest image: five 2000 x 2000 images > 4000 x 4000
    square = cv2.imencode(".png", np.zeros((2000, 2000, 3), np.uint8))[1].tobytes()
    expect(413, "found 20000000 in 5 images", "POST", "/predict/batch",
           *multipart([(f"{i}.png", square, "image/png") for i in range(5)]))
    # too many bytes: refused by its Content-Length before the body is read, or counted as a chunked body arrives
    status, got = _raw(s.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                               b"Content-Length: 5000000\r\n\r\n", [])
    assert status == 413 and "Content-Length of 5000000" in got["message"]
    chunk = b"%x\r\n" % 65536 + bytes(65536) + b"\r\n"
    status, got = _raw(s.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n", [chunk] * 49)
    assert status == 413 and "at most 3145728 bytes" in got["message"]

    # the errors are counted, by route and type
    metrics = s.request("GET", "/metrics")[2].decode()
    assert 'edgeinfer_errors_total{route="/predict",error="RequestError"}' in metrics
    assert 'edgeinfer_errors_total{route="/predict",error="ImageError"}' in metrics
    assert 'edgeinfer_requests_total{method="POST",route="/predict",status="413"}' in metrics
    # and the server still answers
    assert s.json("POST", "/predict", png, {"Content-Type": "image/png"})[0] == 200


@pytest.mark.slow
def test_a_token_guards_every_route_and_a_silent_camera_blocks_nothing(guarded_server, detector):
    server, silent = guarded_server
    png = (SKIMAGE / "chelsea.png").read_bytes()
    for method, path in (("GET", "/"), ("GET", "/health"), ("GET", "/model"), ("GET", "/metrics"),
                         ("GET", "/stream"), ("GET", "/events"), ("POST", "/predict")):
        status, head, data = server.request(method, path, png if method == "POST" else None,
                                            {"Content-Type": "image/png"})
        assert status == 401 and "found none" in json.loads(data)["message"], path
        assert head["www-authenticate"].startswith("Bearer")
        status, _, data = server.request(method, path, png if method == "POST" else None,
                                         {"Content-Type": "image/png", "Authorization": "Bearer guess"})
        assert status == 401 and "does not match" in json.loads(data)["message"], path
    assert server.json("GET", "/model", headers=AUTH)[0] == 200
    assert server.request("GET", f"/?token={TOKEN}")[0] == 200
    # the page sets the token as a cookie, which the <img> and EventSource then carry
    status, head, _ = server.request("GET", f"/?token={TOKEN}")
    cookie = head["set-cookie"].split(";")[0]
    assert server.json("GET", "/health", headers={"Cookie": cookie})[0] == 200

    # the camera accepted the connection and never sent a frame: the API answers all the same
    assert silent.held, "the server should have connected to the camera"
    status, health = server.json("GET", "/health", headers=AUTH)
    assert status == 200 and health["camera"]["state"] != "running" and health["camera"]["frames"] == 0
    status, got = server.json("POST", "/predict", png, {"Content-Type": "image/png", **AUTH})
    assert status == 200 and "detections" in got

    # listening beyond loopback without a token is refused at start
    done = subprocess.run([sys.executable, "-m", "edgeinfer", "serve", str(detector), "--host", "0.0.0.0",
                           "--port", str(_free_port())], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "expected an access token, found none" in done.stderr


@pytest.mark.slow
def test_model_health_and_metrics_describe_the_server(live_server, classifier):
    s = live_server
    status, info = s.json("GET", "/model")
    inspect = subprocess.run([sys.executable, "-m", "edgeinfer", "inspect", str(classifier), "--json"],
                             capture_output=True, text=True, check=True).stdout
    assert status == 200 and info == json.loads(inspect)
    status, health = s.json("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["task"] == "classification"
    assert health["camera"]["source"].endswith("photos.mp4")
    png = (SKIMAGE / "coffee.png").read_bytes()
    for _ in range(3):
        s.request("POST", "/predict", png, {"Content-Type": "image/png"})
    status, head, data = s.request("GET", "/metrics")
    text = data.decode()
    assert status == 200 and head["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['edgeinfer_requests_total{method="POST",route="/predict",status="200"}'] >= 3
    assert samples['edgeinfer_request_duration_seconds_count{route="/predict"}'] >= 3
    assert 0 < samples['edgeinfer_request_latency_seconds{route="/predict",quantile="0.99"}'] < 60
    assert samples['edgeinfer_request_duration_seconds_bucket{route="/predict",le="+Inf"}'] >= 3
    assert samples["process_resident_memory_bytes"] > 10e6 and samples["edgeinfer_camera_frames_total"] > 0


# -- the page, in a real browser ---------------------------------------------------------------------
def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "this test needs Chromium and found none on PATH; ./edge test installs it (apt-get install chromium, as root)"
    return path


def _pixels(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)


@pytest.mark.slow
def test_the_page_shows_the_live_view_its_predictions_and_a_dropped_photo(live_server, classifier, tmp_path):
    from playwright.sync_api import sync_playwright

    model = edgeinfer.load(classifier)
    photo = SKIMAGE / "chelsea.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium())
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.goto(live_server.url)
            assert page.title() == "edgeinfer"
            live = page.locator("#live")
            # the MJPEG stream reaches the <img>: it has the video's size and its pixels change
            page.wait_for_function("document.getElementById('live').naturalWidth === 320", timeout=60_000)
            shots = [_pixels(live.screenshot())]
            texts = {page.inner_text("#prediction")}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (len(shots) < 4 or len(texts) < 3):
                time.sleep(0.7)
                shots.append(_pixels(live.screenshot()))
                texts.add(page.inner_text("#prediction"))
            assert all(s.std() > 10 for s in shots), "the live view should show a photo, not a blank"
            changes = [np.abs(a - b).mean() for a, b in zip(shots, shots[1:])]
            assert max(changes) > 10, changes
            # the prediction text follows the frames: several frames, several photos' predictions
            assert len(texts) >= 3 and all(t.startswith("frame ") for t in texts), texts
            labels = {t.split(": ", 1)[1].split(" ")[0] for t in texts}
            assert len(labels) >= 2, texts
            assert float(page.inner_text("#fps")) > 0 and page.inner_text("#inference_ms") != "–"

            # a photo dropped on the zone (a real drop event with a File) gets Model.predict's answer
            data = list(photo.read_bytes())
            page.evaluate("""([name, bytes]) => {
                const file = new File([new Uint8Array(bytes)], name, {type: "image/png"});
                const dt = new DataTransfer();
                dt.items.add(file);
                const zone = document.getElementById("dropzone");
                for (const type of ["dragenter", "dragover", "drop"])
                    zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
            }""", [photo.name, data])
            page.wait_for_function("document.getElementById('drop-result').textContent.startsWith('chelsea.png:')",
                                   timeout=60_000)
            want = model.predict(photo)
            assert page.inner_text("#drop-result") == f"chelsea.png: {tasks.get('classification').summary(want)}"
            assert json.loads(page.locator("#drop-json").text_content()) == want.to_dict()
        finally:
            browser.close()


# -- stopping --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight_ends_the_streams_and_closes_the_camera(classifier, video, tmp_path,
                                                                                   photo_files):
    s = Served(classifier, "--source", str(video), log=tmp_path / "stop.log")
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    conn.request("GET", "/events")
    events = conn.getresponse()
    assert events.status == 200 and events.readline().startswith(b"retry:")
    result: dict = {}
    batch, head = multipart([(p.name, p.read_bytes(), _ctype(p)) for p in photo_files] * 3)

    def in_flight() -> None:
        result["answer"] = s.request("POST", "/predict/batch", batch, head)

    t = threading.Thread(target=in_flight)
    t.start()
    # SIGTERM once the batch (27 images: seconds of work) is being answered, beside the open event stream
    deadline = time.monotonic() + 60
    while "edgeinfer_requests_in_flight 3" not in s.request("GET", "/metrics")[2].decode():
        assert time.monotonic() < deadline and t.is_alive(), "the batch request never arrived"
        time.sleep(0.05)
    code = s.stop(signal.SIGTERM)
    t.join(60)
    status, _, data = result["answer"]
    assert status == 200 and len(json.loads(data)) == 3 * len(photo_files)
    rest = events.read()  # returns: the server ended the event stream instead of holding the shutdown
    assert b"data: {" in rest
    log = s.log()
    assert "camera closed" in log and "Traceback" not in log, log
    assert code in (0, -signal.SIGTERM), (code, log)


@pytest.mark.slow
def test_a_device_without_the_serve_extra_is_told_how_to_install_it(detector):
    """The OpenVINO environment ./edge test builds is a device install (edgeinfer --no-deps, numpy, OpenCV,
    onnxruntime-openvino): no Starlette, no uvicorn."""
    python = os.environ.get("EDGEINFER_OPENVINO_PYTHON", ".venv-openvino/bin/python")
    assert os.path.exists(python), "./edge test creates the .venv-openvino environment this test uses"
    check = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('starlette') is None)"],
                           capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "True"
    done = subprocess.run([python, "-m", "edgeinfer", "serve", str(detector)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode == 2 and "DependencyError" in done.stderr, done.stderr[-2000:]
    assert "pip install 'edgeinfer[serve]'" in done.stderr


@pytest.mark.slow
def test_instance_masks_over_http_equal_model_predict(tmp_path):
    """The committed shape segmenter: its result carries masks as areas and polygons, the largest to_dict()."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from tests.material import shapes

    path = shapes.export(shapes.train("segment"), tmp_path, variants=["raw"])["raw"]
    model = edgeinfer.load(path)
    server = Served(path, log=tmp_path / "segment.log")
    try:
        polygons = 0
        for name, f in shapes.test_frames("segment").items():
            png = cv2.imencode(".png", f.image)[1].tobytes()
            want = model.predict(f.image).to_dict()
            status, got = server.json("POST", "/predict", png, {"Content-Type": "image/png"})
            assert status == 200 and got == want, name
            polygons += sum(len(d["polygons"]) for d in got["detections"])
        assert polygons > 0
    finally:
        server.stop()
