"""Batch inference on a real local Ray cluster of two nodes (edgeinfer.tools.distributed, ``predict --on ray``).

The cluster is ``ray.cluster_utils.Cluster``: a head and a second node, each a real raylet with its own
object store, one CPU each (the machine has two cores), so the actor pool has one worker per node. Each
run's driver is its own Python process connected to that cluster, as a user's would be: pytest's process
only holds the cluster (Ray's driver threads in the test process race CPython 3.11.7's AST constructor,
gh-106905, when pytest later parses a module).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import edgeinfer
from edgeinfer.tools import distributed

ray = pytest.importorskip("ray")  # the [ray] extra; ./edge test installs it, so CI runs these

pytestmark = pytest.mark.slow

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "camera.png", "coins.png", "logo.png", "brick.png", "color.png", "ihc.png",
          "page.png")
# The object store is small and on /dev/shm when it is large enough (Ray falls back to /tmp otherwise,
# as in containers with a 64 MB /dev/shm); 100 MB per node holds these batches many times over.
STORE = 100 * 2**20
LIMIT_S = 420  # the module's wall-clock bound (its runs take ~80 s here): a stuck cluster fails, not hangs CI


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    def stuck(signum, frame):
        raise TimeoutError(f"the Ray tests ran past {LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(LIMIT_S)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE,
                                                      "include_dashboard": False})
    try:
        c.add_node(num_cpus=1, object_store_memory=STORE)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Sixteen real photos of many sizes and modes (RGB, grayscale, RGBA; PNG and JPEG), two in a subfolder."""
    import skimage
    import sklearn

    sk = Path(skimage.__file__).parent / "data"
    out = tmp_path_factory.mktemp("photos")
    (out / "more").mkdir()
    for name in PHOTOS:
        shutil.copy(sk / name, out / name)
    for name in ("china.jpg", "flower.jpg"):
        shutil.copy(Path(sklearn.__file__).parent / "datasets" / "images" / name, out / "more" / name)
    return out


@pytest.fixture(scope="module")
def classifier(exported):
    return exported["resnet18"][1]


# The driver: a process of its own. ``kill_first_worker`` SIGKILLs the worker that produced the first batch
# (its queued batches must be retried elsewhere); ``stop_after`` ends the driver abruptly (os._exit) after
# that many committed batches, as a killed or crashed driver would.
DRIVER = """
import json, os, signal, sys
from edgeinfer.tools import distributed
args = json.loads(sys.argv[1])
killed, seen = [], []
def on_records(records):
    seen.append(len(records))
    if args.get("kill_first_worker") and not killed:
        killed.append(int(records[0]["worker"].rsplit(":", 1)[1]))
        os.kill(killed[0], signal.SIGKILL)
    if args.get("stop_after") == len(seen):
        os._exit(3)
report = distributed.predict(args["model"], args["source"], out=args["out"], batch=args["batch"],
                             address=args["address"], on_records=on_records,
                             engine=args.get("engine", "onnxruntime"), load_options=args.get("load_options"))
print("REPORT", json.dumps({**report.to_dict(), "killed": killed}))
"""


def _drive(cluster, model, source, out, *, batch, **hooks):
    args = {"model": str(model), "source": str(source), "out": str(out), "batch": batch, "address": cluster.address,
            **hooks}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(args)], capture_output=True, text=True,
                          timeout=180)
    if hooks.get("stop_after"):
        assert done.returncode == 3, done.stderr[-3000:]
        return None
    assert done.returncode == 0, done.stderr[-3000:]
    # Ray's own processes may print beside the driver's report (raylet messages about the killed worker)
    return json.loads(next(line[7:] for line in done.stdout.splitlines() if line.startswith("REPORT ")))


def _single_process(model_path, files):
    model = edgeinfer.load(model_path)
    return {str(f): model.predict(f, top_k=5).to_dict() for f in files}


def _assert_equal_to_single_process(rows, expected):
    by_image = {}
    for row in rows:
        assert row["image"] not in by_image, f"{row['image']} written twice"
        by_image[row["image"]] = row
    assert set(by_image) == set(expected)
    for image, want in expected.items():
        got = by_image[image]
        top_k = got["top_k"] if isinstance(got["top_k"], list) else json.loads(got["top_k"])
        assert [t["index"] for t in top_k] == [t["index"] for t in want["top_k"]], image
        # the same session settings on a batch of several images: equal up to float summation order
        np.testing.assert_allclose([t["score"] for t in top_k], [t["score"] for t in want["top_k"]], atol=1e-5,
                                   err_msg=image)


def test_predictions_on_two_nodes_equal_single_process_predict_for_every_photo(classifier, folder, cluster, tmp_path):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    out = tmp_path / "results.parquet"
    report = _drive(cluster, classifier, folder, out, batch=4)
    assert (report["nodes"], report["workers"], report["predicted"], report["failed"]) == (2, 2, len(files), 0)
    rows = distributed.read_results(out)
    _assert_equal_to_single_process(rows, _single_process(classifier, files))
    assert all(r["worker"] for r in rows)  # each result names the worker (host:pid) that produced it
    assert {r["engine"] for r in rows} == set(report["engines"]) == {f"onnxruntime {ort.__version__}"}
    assert not out.with_name(out.name + ".parts").exists()


def test_unreadable_file_is_recorded_and_the_run_completes(classifier, folder, cluster, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    (mixed / "truncated.jpg").write_bytes((folder / "rocket.jpg").read_bytes()[:300])
    (mixed / "empty.png").write_bytes(b"")
    out = tmp_path / "results.jsonl"
    report = _drive(cluster, classifier, mixed, out, batch=4)
    assert (report["predicted"], report["failed"]) == (16, 2)
    rows = {r["image"]: r for r in distributed.read_results(out)}
    assert len(rows) == 18
    assert "complete JPEG header" in rows[str(mixed / "truncated.jpg")]["error"]  # cut in its header: refused before decoding
    assert "0 bytes" in rows[str(mixed / "empty.png")]["error"]
    good = [p for p in mixed.rglob("*") if p.is_file() and p.name not in ("truncated.jpg", "empty.png")]
    _assert_equal_to_single_process([r for r in rows.values() if "error" not in r], _single_process(classifier, good))


def test_killed_worker_is_restarted_and_nothing_is_lost_or_duplicated(classifier, folder, cluster, tmp_path):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    out = tmp_path / "results.parquet"
    report = _drive(cluster, classifier, folder, out, batch=1, kill_first_worker=True)
    assert report["killed"] and report["predicted"] == len(files) and report["failed"] == 0
    with pytest.raises(ProcessLookupError):
        os.kill(report["killed"][0], 0)
    rows = distributed.read_results(out)
    _assert_equal_to_single_process(rows, _single_process(classifier, files))


def test_rerun_after_an_interruption_resumes_where_it_stopped(classifier, folder, cluster, tmp_path):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    out = tmp_path / "results.jsonl"
    _drive(cluster, classifier, folder, out, batch=2, stop_after=2)  # the driver dies after two batches
    assert not out.exists()  # the output appears whole or not at all
    committed = [json.loads(line)["image"] for p in sorted(out.with_name(out.name + ".parts").glob("part-*"))
                 for line in p.read_text().splitlines()]
    assert 0 < len(committed) < len(files)
    report = _drive(cluster, classifier, folder, out, batch=2)
    assert report["skipped"] == len(committed) and report["predicted"] == len(files) - len(committed)
    _assert_equal_to_single_process(distributed.read_results(out), _single_process(classifier, files))
    # and a finished output is skipped whole
    again = _drive(cluster, classifier, folder, out, batch=2)
    assert (again["skipped"], again["predicted"]) == (len(files), 0)


def test_cli_engine_ray_with_reference_reports_agreement_with_training(exported, folder, cluster, tmp_path):
    import torch

    torch_model, onnx_path, _ = exported["resnet18"]
    weights = tmp_path / "resnet18.pt"
    torch.save(torch_model.state_dict(), weights)
    out = tmp_path / "results.parquet"
    cmd = [sys.executable, "-m", "edgeinfer", "predict", str(onnx_path), str(folder), "--on", "ray",
           "--address", cluster.address, "--out", str(out), "--batch", "4", "--reference", "resnet18",
           "--weights", str(weights), "--num-classes", "6", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{"):])  # Ray may print around it
    rows = distributed.read_results(out)
    assert report["predicted"] == len(rows) == 16
    ref = report["reference"]
    # The reference side, recomputed here: the torch model on its own transform, image by image.
    from converters.compare import load_like_training
    from converters.zoo import imagenet_eval_transform

    tf = imagenet_eval_transform()
    torch_model.eval()
    agree, diffs = [], []
    for row in rows:
        with torch.no_grad():
            p = torch.softmax(torch_model(tf(load_like_training(row["image"], "RGB"))[None]), 1)[0].numpy()
        deployed = edgeinfer.load(onnx_path).predict(row["image"], top_k=6).scores
        assert row["reference_top1"] == int(p.argmax())
        agree.append(int(p.argmax()) == int(deployed.argmax()))
        diffs.append(float(np.abs(p - deployed).max()))
        assert row["max_abs_diff"] == pytest.approx(diffs[-1], abs=1e-5)
    assert ref["images"] == 16 and ref["top1_agreement"] == pytest.approx(np.mean(agree))
    assert ref["max_abs_diff"] == pytest.approx(max(diffs), abs=1e-5)
    assert ref["max_abs_diff"] < 0.05  # the exact pipeline: torch and the device agree closely on real photos


def test_detector_boxes_come_back_one_row_each_as_a_single_process_finds_them(cluster, tmp_path):
    """A dynamic-size detector (one image a call, each letterboxed to its own rectangle) on OpenVINO at another
    size than its default: the workers load it with the engine and ``load`` options the run was given, and the
    task table's rows, one per box, equal the single-process Detections of each file loaded the same way."""
    pytest.importorskip("openvino")  # the [openvino] extra; ./edge test installs it
    import cv2

    from tests.material import shapes
    from edgeinfer import tasks

    onnx = shapes.export(shapes.train("detect"), tmp_path / "detector", variants=("raw-dynamic",))["raw-dynamic"]
    frames = tmp_path / "frames"
    frames.mkdir()
    for name, frame in shapes.test_frames("detect").items():  # BGR frames of four sizes, shapes drawn on photos
        cv2.imwrite(str(frames / f"{name}.png"), frame.image)
    out = tmp_path / "boxes.parquet"
    report = _drive(cluster, onnx, frames, out, batch=2, engine="openvino", load_options={"imgsz": 416})
    assert report["predicted"] == 4 and report["failed"] == 0
    rows = distributed.read_results(out)
    model = edgeinfer.load(onnx, engine="openvino", imgsz=416)
    assert report["engines"] == [f"openvino {model.engine_version}"]
    assert {r["engine"] for r in rows} == set(report["engines"])
    task = tasks.get(model.spec.task)
    total = 0
    for f in sorted(frames.iterdir()):
        want = task.rows(model.predict(f))
        got = [r for r in rows if r["image"] == str(f)]
        total += len(want)
        assert len(got) == max(1, len(want)), f.name
        for g, w in zip(got, want):
            assert (g["label"], g["class_id"]) == (w["label"], w["class_id"])
            np.testing.assert_allclose([g[k] for k in ("confidence", "x1", "y1", "x2", "y2")],
                                       [w[k] for k in ("confidence", "x1", "y1", "x2", "y2")], atol=1e-4)
    assert total >= 4  # the trained detector finds the drawn shapes
