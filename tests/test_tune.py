"""tune searches engine x precision x threads on real sessions, keeps what passes the task's gate against ONNX
Runtime fp32, writes its choice beside the model, and engine="auto" runs that choice -- only while it was made for
this device and this spec.

The classifier is the photo classifier trained here (MobileNetV3-Small, real weights), the detector the committed
shapes detector exported by Ultralytics' own exporter; the images are real photos and the detector's test frames.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest

import edgeinfer
from conftest import edit_spec
from converters.tune import tune
from edgeinfer.engines import EngineFallbackWarning, base, choice
from edgeinfer.errors import ModelError
from test_embeddings import embedder  # noqa: F401  (fixture)

os.environ.setdefault("YOLO_OFFLINE", "1")


def _load_quietly(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)  # a choice that fits is used without a word
        return edgeinfer.load(path, **kw)


@pytest.fixture(scope="module")
def tuned_classifier(exported, photo_files, tmp_path_factory):
    src = tmp_path_factory.mktemp("tune-cls") / "mobilenet_v3_small.onnx"
    shutil.copy(exported["mobilenet_v3_small"][1], src)
    # intel-openvino lists OpenVINO and ONNX Runtime: both run here, the fp32 model and its fp16 variant on each
    report = tune(src, device="intel-openvino", images=photo_files[:2], precisions=("fp32", "fp16"), threads=(1, 2),
                  rounds=5)
    return src, report


def test_tune_measures_every_engine_and_precision_and_chooses_the_fastest_within_the_classifier_gate(
        tuned_classifier, photo_files):
    src, report = tuned_classifier
    measured = {(r.engine, r.precision) for r in report.rows}
    # every engine x precision is measured at both thread counts (OpenVINO too on the fp16 variant, whose input is
    # also named after the Cast keep_io_types adds: the adapter names ports as the ONNX graph does)
    assert measured == {(e, p) for e in ("onnxruntime", "openvino") for p in ("fp32", "fp16")}
    assert not report.skipped
    assert sorted((r.engine, r.precision, r.threads) for r in report.rows) == sorted(
        (e, p, n) for e, p in measured for n in (1, 2))
    assert report.task == "classification" and report.images == 3  # the spec's self-test image and two photos
    assert [r.median_ms for r in report.rows] == sorted(r.median_ms for r in report.rows)
    versions = {r.engine: r.engine_version for r in report.rows}
    assert versions["openvino"] == edgeinfer.engines.adapter("openvino").version()
    for r in report.rows:  # the classifier's own gate, not top-1 alone: probabilities within its atol
        assert r.passes == (r.gate["max_abs_diff"] <= r.gate["atol"] and r.gate["top1_disagreements"] == 0)
    chosen = report.chosen
    assert chosen is not None and chosen == next(r for r in report.rows if r.passes)
    # checked again outside tune: the chosen configuration, loaded as a user loads it, against fp32 ORT
    ref = edgeinfer.load(src)
    model = _load_quietly(src, engine="auto", device="intel-openvino")
    assert (model.engine, model.engine_version) == (chosen.engine, chosen.engine_version)
    assert model.path == str(base.variant_path(src, chosen.precision))
    for f in photo_files[:2]:
        a, b = ref.predict(f), model.predict(f)
        assert a.top_k[0][0] == b.top_k[0][0] and np.abs(a.scores - b.scores).max() <= 1e-3
    data = report.to_dict()
    assert data["schema"] == "edgeinfer.tune/2" and data["chosen"]["engine"] == chosen.engine
    assert json.loads(json.dumps(data))["rows"][0]["gate"]["images"] == 3


def test_the_choice_beside_the_model_records_what_it_was_measured_for(tuned_classifier):
    src, report = tuned_classifier
    written = json.loads(choice.path_for(src).read_text())
    c = report.chosen
    assert report.choice_path == str(choice.path_for(src))
    assert {k: written[k] for k in ("engine", "engine_version", "precision", "provider", "threads")} == {
        "engine": c.engine, "engine_version": c.engine_version, "precision": c.precision, "provider": c.provider,
        "threads": c.threads}
    assert written["spec_sha256"] == base.spec_hash(edgeinfer.load(src).spec)
    assert written["device"] == "intel-openvino" and len(written["rows"]) == len(report.rows)
    if c.precision != "fp32":
        assert report.variant_path == str(base.variant_path(src, c.precision))
    # the tuned profile says the same: its engines start with the chosen one
    tuned = edgeinfer.providers.read_profile(report.profile_path)
    assert tuned.engines[0] == c.engine and tuned.precision == c.precision and tuned.intra_op_threads == c.threads
    if c.engine == "onnxruntime":
        model = _load_quietly(src, engine="auto", device="intel-openvino")
        assert model.session.get_session_options().intra_op_num_threads == c.threads


def test_a_choice_made_for_another_spec_or_device_is_refused_with_a_warning(tuned_classifier, tmp_path):
    src, report = tuned_classifier
    # the same graph whose spec changed after tune (its labels renamed): the choice's timings are not evidence
    other = edit_spec(src, tmp_path / src.name, lambda spec: spec.update(labels=[l + "!" for l in spec["labels"]]))
    shutil.copy(choice.path_for(src), choice.path_for(other))
    if report.variant_path:
        edit_spec(report.variant_path, base.variant_path(other, report.chosen.precision),
                  lambda spec: spec.update(labels=[l + "!" for l in spec["labels"]]))
    with pytest.warns(EngineFallbackWarning, match="measured for the spec with hash"):
        model = edgeinfer.load(other, engine="auto", device="intel-openvino")
    assert model.engine == "openvino" and model.path == str(other)  # the profile's order: OpenVINO first, fp32
    with pytest.raises(ModelError, match="strict=True refuses"):
        edgeinfer.load(other, engine="auto", device="intel-openvino", strict=True)
    # made on intel-openvino: another device's profile does not take it
    with pytest.warns(EngineFallbackWarning, match="made for device 'intel-openvino', not 'cpu'"):
        model = edgeinfer.load(src, engine="auto", device="cpu")
    assert model.engine == "onnxruntime" and model.path == str(src)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from tests.material import shapes

    path = shapes.export(shapes.train("detect"), tmp_path_factory.mktemp("tune-det"), variants=["raw"])["raw"]
    return path, [f.image for f in shapes.test_frames("detect").values()]


def test_tune_on_the_trained_detector_converts_ncnn_files_and_auto_runs_them(detector, tmp_path):
    path, frames = detector
    src = tmp_path / path.name
    shutil.copy(path, src)
    assert not base.artifact_dir(src, "ncnn").exists()
    # raspberry-pi-5 prefers ncnn, which runs only its own files: none beside the model, so made for this run
    report = tune(src, device="raspberry-pi-5", engines=("ncnn",), images=frames[:2], precisions=("fp32",),
                  threads=(2,), rounds=3)
    assert [(r.engine, r.artifact) for r in report.rows] == [("ncnn", "converted")]
    r = report.chosen
    assert r is not None and r.passes and sum(r.gate["detections"]) > 0
    assert r.gate["candidate_detections"] == r.gate["detections"] and r.gate["box_max_abs_diff"] <= 0.5
    assert report.artifact_path == str(base.artifact_dir(src, "ncnn"))
    record = json.loads((base.artifact_dir(src, "ncnn") / base.RECORD).read_text())
    ref = edgeinfer.load(src)
    assert record["spec_sha256"] == base.spec_hash(ref.spec) == json.loads(choice.path_for(src).read_text())[
        "spec_sha256"]
    model = _load_quietly(src, engine="auto", device="raspberry-pi-5")
    assert model.engine == "ncnn" and model.session.net.opt.num_threads == 2
    for frame in frames[:2]:  # the boxes the device now draws, against ONNX Runtime's
        a, b = ref.detect([frame])[0], model.detect([frame])[0]
        assert len(a) == len(b) > 0 and (a.class_id == b.class_id).all() and np.abs(a.xyxy - b.xyxy).max() <= 0.5
    # a second tune over the profile's engines finds ncnn's files beside the model and says it used them; LiteRT's
    # .tflite is made for this run
    again = tune(src, device="raspberry-pi-5", images=frames[:1], precisions=("fp32",), threads=(2,), rounds=2)
    assert {(r.engine, r.artifact) for r in again.rows} == {("ncnn", "beside"), ("litert", "converted"),
                                                            ("onnxruntime", None)}
    assert _load_quietly(src, engine="auto", device="raspberry-pi-5").engine == again.chosen.engine



def test_tune_judges_an_embedder_by_the_angle_of_its_vectors(embedder, photo_files, tmp_path):  # noqa: F811
    src = tmp_path / "embed.onnx"
    shutil.copy(embedder[1], src)
    report = tune(src, device="cpu", engines=("onnxruntime", "openvino"), images=photo_files[:1],
                  precisions=("fp32", "fp16"), threads=(1,), rounds=3)
    assert report.task == "embedding" and {r.engine for r in report.rows} == {"onnxruntime", "openvino"}
    for r in report.rows:
        assert r.passes == (r.gate["min_cosine"] >= r.gate["required"] == 0.9999)
    model = _load_quietly(src, engine="auto")
    ref = edgeinfer.load(src)
    assert (model.engine, model.path) == (report.chosen.engine, str(base.variant_path(src, report.chosen.precision)))
    a, b = ref.predict(photo_files[2]).vector, model.predict(photo_files[2]).vector  # an image tune never saw
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.9999
