"""The camera loop with frames in flight in the engine (``stream(..., inflight=N)``, OpenVINO's asynchronous infer
requests): on real video files of real photos, a trained photo classifier and the trained shapes detector give
exactly the sequential loop's results, in order; a loop stopped midway leaves no thread or request running; the input
buffers the preprocessor reuses are never handed out while a request reads them; engines without an asynchronous API
run as before.
"""

from __future__ import annotations

import os
import threading
import time

import cv2
import numpy as np
import pytest

import edgeinfer
from edgeinfer.pipeline.preprocess import Prepared
from edgeinfer.tools.stream import StreamStats, _Buffers, stream

pytest.importorskip("openvino")
os.environ.setdefault("YOLO_OFFLINE", "1")


def _write(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, frames[0].shape[1::-1])
    for f in frames:
        writer.write(np.ascontiguousarray(f))
    writer.release()
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, exported, photos):
    """The photo classifier trained here (mobilenet_v3_small, exported once per session) and a 720p video panning
    over the photos."""
    frames = []
    for k, name in enumerate(list(photos)[:4]):
        base = cv2.resize(photos[name][..., ::-1], (1600, 900))
        frames += [base[90:810, 40 * i:40 * i + 1280] for i in range(k % 2, 8, 2)]  # 4 per photo, panning
    return exported["mobilenet_v3_small"][1], _write(tmp_path_factory.mktemp("overlap") / "photos.mp4", frames), \
        len(frames)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The committed shapes detector, exported by Ultralytics' exporter, and a 720p video of held-out photos with
    shapes on them."""
    from tests.material import shapes

    tmp = tmp_path_factory.mktemp("overlap-det")
    path = shapes.export(shapes.train("detect"), tmp, variants=["raw"])["raw"]
    frames = shapes.test_frames("detect", sizes={f"f{k}": (1280, 720) for k in range(8)})
    return path, _write(tmp / "shapes.mp4", [f.image for f in frames.values()]), len(frames)


def _same(a, b) -> bool:
    """Exactly the same result: every array of the task's result type equal, bit for bit."""
    da, db = a.__dict__, b.__dict__
    return da.keys() == db.keys() and all(
        np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in ((da[k], db[k]) for k in da))


# the classifier is the suite's photo classifier, trained once per session (slow when it is not built yet)
@pytest.mark.parametrize("which", [pytest.param("classifier", marks=pytest.mark.slow), "detector"])
def test_overlapped_stream_gives_the_sequential_results_in_order(which, request):
    path, video, n = request.getfixturevalue(which)
    model = edgeinfer.load(path, engine="openvino", threads=2)
    assert model.overlaps
    sequential = [(t.index, r) for _, r, t in stream(model, str(video), inflight=1)]
    stats = StreamStats()
    overlapped = [(t.index, r) for _, r, t in stream(model, str(video), inflight=3, stats=stats)]
    assert [i for i, _ in overlapped] == [i for i, _ in sequential] == list(range(n))
    assert all(_same(a, b) for (_, a), (_, b) in zip(overlapped, sequential))
    if which == "detector":
        assert sum(len(r) for _, r in overlapped) > 0  # boxes were found, and compared
    if which == "detector":
        # more than one request was made, so frames were in the engine together (its inference is far slower than
        # its preprocessing: the preprocessor is always ahead)
        assert len(model.session._idle) >= 2
    # and each result is what predict() gives for that frame, read on its own
    cap, frames = cv2.VideoCapture(str(video)), []
    while (r := cap.read())[0]:
        frames.append(r[1])
    assert all(_same(model.predict(f), r) for f, (_, r) in zip(frames[::3], overlapped[::3]))
    busy = sum(t.inference_ms for t in stats.timings)
    assert 0 < busy <= (stats.ended - stats.started) * 1e3  # the engine's busy time, not counted twice


def test_stopping_midway_waits_for_the_frames_in_flight_and_leaves_no_thread(detector):
    path, video, _ = detector
    model = edgeinfer.load(path, engine="openvino", threads=2)
    for k, _ in enumerate(stream(model, str(video), inflight=3)):
        if k == 2:
            break  # frames 3 and 4 are in the engine now
    deadline = time.monotonic() + 10
    while any(t.name.startswith("edgeinfer-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("edgeinfer-")]
    idle = model.session._idle
    assert len(idle) >= 2 and all(r.wait_for(0) for r in idle)  # every request back, none running
    # the same model streams the whole file again, reusing those requests
    assert [t.index for _, _, t in stream(model, str(video), inflight=3)] == list(range(8))


def test_an_input_in_flight_is_never_handed_out_again(detector):
    path, video, _ = detector
    model = edgeinfer.load(path, engine="openvino")
    frame = cv2.VideoCapture(str(video)).read()[1]
    shape = (1, 3, *model.spec.input.height_width)
    pool = _Buffers(keep=4)
    x = pool.get(shape, np.float32)
    model.preprocessor(frame, out=x[0])
    handle = model.submit(Prepared(x, [frame.shape[:2]]))
    del x
    held = pool.items[0]
    other = pool.get(shape, np.float32)
    assert other is not held  # the request reads it in place (share_inputs): the pool must not give it out
    other[:] = 0  # what the preprocessor would do to a buffer it was given
    got = handle.wait()
    want = model.infer(Prepared(held, [frame.shape[:2]]))
    assert all(np.array_equal(a, b) for a, b in zip(got, want)) and handle.wait() is got
    assert handle.submitted <= handle.done <= time.perf_counter()


def test_an_engine_without_an_asynchronous_api_runs_one_frame_at_a_time(detector):
    path, video, n = detector
    model = edgeinfer.load(path)  # ONNX Runtime
    assert not model.overlaps
    handle = model.submit(model.prepare([np.zeros((300, 400, 3), np.uint8)]))
    assert handle.ready()  # it already ran
    one = [r for _, r, _ in stream(model, str(video), inflight=1)]
    three = [r for _, r, _ in stream(model, str(video), inflight=3)]
    assert len(one) == n and sum(map(len, one)) > 0 and all(_same(a, b) for a, b in zip(one, three))
    with pytest.raises(ValueError, match="inflight"):
        next(stream(model, str(video), inflight=0))


def test_camera_cli_runs_openvino_overlapped_with_the_sequential_results(detector, tmp_path):
    import json
    import subprocess
    import sys

    path, video, _ = detector
    jsonl = tmp_path / "p.jsonl"
    res = subprocess.run([sys.executable, "-m", "edgeinfer", "camera", str(path), "--source", str(video), "--engine",
                          "openvino", "--inflight", "3", "--max-frames", "5", "--jsonl", str(jsonl)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("5 frames")
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    model = edgeinfer.load(path, engine="openvino")
    want = [json.loads(json.dumps(r.to_dict())) for _, r, _ in stream(model, str(video), inflight=1, max_frames=5)]
    assert [x.pop("frame") for x in lines] == list(range(5))
    assert [{k: v for k, v in x.items() if k != "latency_ms"} for x in lines] == want
