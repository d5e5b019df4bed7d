"""Fault injection on trained models of every task: each deployment fault built into a healthy file is found
with its fix, and the healthy file raises nothing.

Material: the shapes detector committed in tests/data/detectors (Ultralytics' own static export at 320, its
metadata in the file), the LR-ASPP semantic segmenter trained on the shapes scenes, the photo classifiers of
the ``exported`` fixture (and an embedder from one of them), the Keras classifiers committed in
tests/data/keras, and a classifier with a Hugging Face ``preprocessor_config.json`` beside it. A fault is a spec
attached by hand (as a user does): its self-test is dropped, so the finding under test is the one that names the
fault, not a self-test mismatch.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import edgeinfer
from conftest import edit_spec
from edgeinfer.pipeline import ops
from edgeinfer.spec import Step

os.environ.setdefault("YOLO_OFFLINE", "1")
pytestmark = pytest.mark.slow

KERAS = Path(__file__).with_name("data") / "keras"


def _attached(src, dst, edit) -> Path:
    """A copy of ``src`` carrying its spec changed by ``edit`` (spec -> spec), attached without a self-test."""
    from converters.attach import write_with_spec

    spec = edgeinfer.load(src).spec
    write_with_spec(onnx.load(str(src)), dst, dataclasses.replace(edit(spec), self_test=None))
    return Path(dst)


def _step(spec, op, **changes):
    return dataclasses.replace(spec, steps=tuple(Step(s.op, {**s.params, **changes}) if s.op == op else s
                                                 for s in spec.steps))


def _order(order):
    return lambda s: dataclasses.replace(s, input=dataclasses.replace(s.input, channel_order=order))


def _problems(report) -> dict:
    return {f.code: f for f in report.findings if f.severity in ("error", "warning")}


def _assert_caught(report, codes) -> None:
    found = _problems(report)
    assert set(codes) <= set(found), report.codes()
    for code in codes:
        assert found[code].fix and found[code].message, found[code]


# -- the shapes detector (Ultralytics' static export at 320) -------------------------------------------
@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    from tests.material import shapes

    return shapes.export(shapes.train("detect"), tmp_path_factory.mktemp("detector"), variants=["raw"])["raw"]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """16 held-out frames with shapes (4 sizes x 4 seeds): enough for the channel probe's paired test."""
    from tests.material import shapes

    return [f.image for seed in range(4) for f in shapes.test_frames("detect", seed=1234 + seed).values()]


DETECTOR_FAULTS = {
    "plain resize": (lambda s: dataclasses.replace(s, steps=(Step("resize", {
        "rule": "exact", "size": [320, 320], "interpolation": "bilinear", "backend": "opencv"}),) + s.steps[1:]),
        {"letterbox_missing"}),
    "pad 0": (lambda s: _step(s, "letterbox", fill=0), {"letterbox_fill"}),
    "BGR": (_order("bgr"), {"channel_order", "channels_swapped"}),
    "corner padding": (lambda s: _step(s, "letterbox", center=False), {"letterbox_center"}),
    "no upscaling": (lambda s: _step(s, "letterbox", scaleup=False), {"letterbox_scaleup"}),
    "nearest resize": (lambda s: _step(s, "letterbox", interpolation="nearest"), {"resize_method"}),
    "0-255": (lambda s: _step(s, "to_float", scale="none"), {"scale", "input_stats"}),
    "ImageNet mean/std": (lambda s: dataclasses.replace(s, steps=s.steps + (Step("normalize", {
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),)), {"normalize"}),
}


def test_the_healthy_detector_raises_nothing_with_or_without_the_rule_attached(detector, frames, tmp_path):
    for path in (detector, _attached(detector, tmp_path / "same.onnx", lambda s: s)):
        report = edgeinfer.check(path, images=frames)
        assert report.ok, report.codes()
        probe = report.measured["channel_probe"]
        # the trained detector is surer of RGB, as trained: measured -26 %, paired t -2.7
        assert probe["images"] == 16 and probe["relative_change"] < -0.1 and probe["paired_t"] < -1.5, probe


@pytest.mark.parametrize("fault", list(DETECTOR_FAULTS))
def test_every_detector_fault_is_caught_with_both_values_and_the_fix(fault, detector, frames, tmp_path):
    edit, codes = DETECTOR_FAULTS[fault]
    report = edgeinfer.check(_attached(detector, tmp_path / "fault.onnx", edit), images=frames)
    _assert_caught(report, codes)
    for f in report.findings:
        if f.details.get("field"):  # a field compared with the tool's rule: both values, and the tool's steps
            assert f.details["spec"] != f.details["tool"] and "LetterBox" in f.fix, f


def test_the_detector_probe_says_which_order_and_by_how_much(detector, frames, tmp_path):
    report = edgeinfer.check(_attached(detector, tmp_path / "bgr.onnx", _order("bgr")), images=frames)
    probe = _problems(report)["channels_swapped"]
    assert probe.details["better_channel_order"] == "rgb" and probe.details["relative_change"] > 0.2
    assert "RGB" in probe.message and "channel_order to 'rgb'" in probe.fix
    few = edgeinfer.check(_attached(detector, tmp_path / "few.onnx", _order("bgr")), images=frames[:4])
    assert "channels_swapped" not in few.codes()  # 4 images are too few to say


# -- classifiers: the photo classifiers, the Keras classifiers ------------------------------------------
def _ultralytics(path):
    """The package's own pipeline as a reference: Ultralytics' predictor on the same file."""
    from ultralytics import YOLO

    yolo = YOLO(str(path), task="detect")

    def reference(frame):
        boxes = yolo.predict(frame, verbose=False)[0].boxes
        return {"xyxy": boxes.xyxy.numpy(), "class_id": boxes.cls.numpy().astype(int), "confidence": boxes.conf.numpy()}
    return reference


def test_a_packages_own_pipeline_is_a_reference_and_misplaced_padding_is_caught_by_it(detector, frames, tmp_path):
    healthy = edgeinfer.check(detector, images=frames, reference=_ultralytics(detector))
    assert "reference_mismatch" not in healthy.codes(), healthy.codes()
    figures = healthy.measured["reference"]
    assert figures["images"] == 8 and sum(figures["detections"]) > 0 and figures["box_max_abs_diff"] <= 0.5, figures
    # the spec puts the padding in the corner, the package centres it: boxes land elsewhere, confidences too
    corner = _attached(detector, tmp_path / "corner.onnx", lambda s: _step(s, "letterbox", center=False))
    report = edgeinfer.check(corner, images=frames, reference=_ultralytics(detector))
    _assert_caught(report, {"reference_mismatch"})


def test_the_marker_probe_finds_an_inverse_that_disagrees_with_the_pixels(detector, frames, tmp_path, monkeypatch):
    corner = _attached(detector, tmp_path / "corner.onnx", lambda s: _step(s, "letterbox", center=False))
    for path in (detector, corner):
        report = edgeinfer.check(path, images=frames[:3])
        assert "geometry_inverse" not in report.codes() and report.measured["geometry_probe_px"] <= 1.0, report.measured

    def centred_only(h, w, p):  # the inverse before the fix: a centred padding whatever the letterbox did
        new_h, new_w, top, bottom, left, right = ops.letterbox_geometry(h, w, p)
        oh, ow = new_h + top + bottom, new_w + left + right
        return ops.Placement((h, w), (oh, ow), (new_w / w, new_h / h), ((ow - new_w) / 2, (oh - new_h) / 2))

    monkeypatch.setitem(ops.OPS, "letterbox", dataclasses.replace(ops.OPS["letterbox"], place=centred_only))
    _assert_caught(edgeinfer.check(corner, images=frames[:3]), {"geometry_inverse"})


@pytest.fixture(scope="module")
def crops(tmp_path_factory, photos) -> list[Path]:
    from tests.material.photos import photo_crops

    return sorted(photo_crops(tmp_path_factory.mktemp("crops"), photos, per_photo=3).glob("*.png"))


def test_the_probe_catches_a_photo_classifier_fed_the_other_channel_order(exported, crops, tmp_path):
    """resnet18 is surer of RGB, as trained (measured -9.7 %, paired t -3.7 on 18 crops): fed BGR, it is caught."""
    src = exported["resnet18"][1]
    assert "channels_swapped" not in edgeinfer.check(src, images=crops).codes()
    report = edgeinfer.check(_attached(src, tmp_path / "bgr.onnx", _order("bgr")), images=crops)
    _assert_caught(report, {"channels_swapped"})


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_a_classifier_fed_the_other_channel_order_is_caught_against_its_transform(arch, exported, crops,
                                                                                 imagenet_transform, tmp_path):
    """mobilenet_v3_small (40 steps with colour jitter) is even a little surer swapped (measured +5.8 %, paired t
    0.8): the probe's paired test keeps it quiet, and the training transform is the reference that finds it."""
    from converters.reference import check as doctor

    src = exported[arch][1]
    healthy = doctor(src, crops, transform=imagenet_transform)
    assert healthy.ok, healthy.codes()
    report = doctor(_attached(src, tmp_path / "bgr.onnx", _order("bgr")), crops, transform=imagenet_transform)
    _assert_caught(report, {"color_order"})


@pytest.fixture(scope="module")
def keras_photos(tmp_path_factory) -> list[Path]:
    """The Keras classifiers' ten photos and two crops of each (30 images)."""
    from tests.material import keras_models
    from tests.material.photos import photo_crops

    files = keras_models.photo_paths()
    photos = {p.stem: cv2.imread(str(p))[..., ::-1] for p in files}
    return files + sorted(photo_crops(tmp_path_factory.mktemp("kcrops"), photos, per_photo=2).glob("*.png"))


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch", "none"])
def test_a_keras_classifier_fed_the_other_channel_order_is_caught(mode, keras_photos, tmp_path):
    """Keras' caffe mode trains on BGR (the contract says so); the others on RGB. Measured: swapped against as
    deployed, healthy -20 % to -36 % (paired t -3.4 to -8.7)."""
    from converters import attach_spec
    from tests.material import keras_models

    src = next(KERAS.glob(f"{mode}-*.onnx"))
    path = tmp_path / "healthy.onnx"
    attach_spec(src, path, {"mode": mode, "size": list(keras_models.SIZES[mode])}, labels=list(keras_models.LABELS))
    healthy = edgeinfer.check(path, images=keras_photos)
    assert healthy.ok, healthy.codes()  # caffe and none feed 0-255 by design: no input_stats alarm
    wrong = "rgb" if mode == "caffe" else "bgr"
    report = edgeinfer.check(_attached(path, tmp_path / "fault.onnx", _order(wrong)), images=keras_photos)
    _assert_caught(report, {"channels_swapped"})
    assert _problems(report)["channels_swapped"].details["better_channel_order"] != wrong


# -- a Hugging Face processor config beside the model ---------------------------------------------------
HF_CONFIG = {"image_processor_type": "BitImageProcessorFast", "do_resize": True, "size": {"shortest_edge": 256},
             "resample": 2, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
             "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
             "image_std": [0.229, 0.224, 0.225]}

HF_FAULTS = {
    "mean/std 0.5": (lambda s: _step(s, "normalize", mean=[0.5] * 3, std=[0.5] * 3), {"normalize"}),
    "BGR": (_order("bgr"), {"channel_order"}),
    "nearest resize": (lambda s: _step(s, "resize", interpolation="nearest"), {"resize_method"}),
    "resize 288": (lambda s: _step(s, "resize", size=288), {"resize_size"}),
}


@pytest.fixture(scope="module")
def hf_model(exported, tmp_path_factory) -> Path:
    """The resnet18 photo classifier with the spec attached from the processor config saved beside it."""
    from converters import attach_spec

    folder = tmp_path_factory.mktemp("hf")
    (folder / "preprocessor_config.json").write_text(json.dumps(HF_CONFIG))
    bare = onnx.load(str(exported["resnet18"][1]))
    del bare.metadata_props[:]
    onnx.save(bare, str(folder / "bare.onnx"))
    attach_spec(folder / "bare.onnx", folder / "model.onnx", folder / "preprocessor_config.json")
    return folder / "model.onnx"


@pytest.mark.parametrize("fault", [None, *HF_FAULTS])
def test_a_spec_is_compared_with_the_hugging_face_processor_beside_the_model(fault, hf_model, photo_files):
    if fault is None:
        report = edgeinfer.check(hf_model, images=photo_files[:4])
        assert report.ok, report.codes()
        return
    edit, codes = HF_FAULTS[fault]
    path = _attached(hf_model, hf_model.with_name("fault.onnx"), edit)  # beside the config, as the tool saved it
    try:
        report = edgeinfer.check(path, images=photo_files[:4])
    finally:
        path.unlink()
    _assert_caught(report, codes)
    for code in codes:
        found = _problems(report)[code]
        assert "preprocessor_config.json" in found.message and "edgeinfer attach" in found.fix, found


# -- the semantic segmenter ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    from converters import export_segmenter
    from tests.material import semseg

    folder = tmp_path_factory.mktemp("segmenter")
    scenes = semseg.test_scenes(8)
    path = folder / "lraspp.onnx"
    export_segmenter(semseg.train(progress=False), path, transform=semseg.transform(), labels=semseg.LABELS,
                     images=[img[..., ::-1].copy() for img, _ in scenes[:3]])
    files = []
    for i, (img, _) in enumerate(scenes):
        files.append(folder / f"scene{i}.png")
        cv2.imwrite(str(files[-1]), img)
    return path, files


SEGMENTER_FAULTS = {
    "nearest resize": (lambda s: _step(s, "resize", interpolation="nearest"), "resize_mismatch"),
    "square resize": (lambda s: _step(s, "resize", rule="exact", size=[128, 128]), "resize_mismatch"),
    "no normalisation": (lambda s: dataclasses.replace(s, steps=tuple(x for x in s.steps if x.op != "normalize")),
                         "input_stats"),
    "BGR": (_order("bgr"), "color_order"),
}


def test_the_healthy_segmenter_raises_nothing_on_the_device_or_against_its_transform(segmenter):
    from converters.reference import check as doctor
    from tests.material import semseg

    path, files = segmenter
    assert edgeinfer.check(path, images=files).ok
    report = doctor(path, files, transform=semseg.transform())
    assert report.ok and report.measured["reference_max_levels"] == 0.0, report.codes()


@pytest.mark.parametrize("fault", list(SEGMENTER_FAULTS))
def test_every_segmenter_fault_is_caught_against_the_training_transform(fault, segmenter, tmp_path):
    """A torchvision export carries no tool description to compare with, and this segmenter (trained on shapes
    of every hue) is nearly colour-blind in its confidence (the channel probe measured +0.4 %, t 0.9): the
    training transform is the reference that finds these."""
    from converters.reference import check as doctor
    from tests.material import semseg

    path, files = segmenter
    edit, code = SEGMENTER_FAULTS[fault]
    report = doctor(_attached(path, tmp_path / "fault.onnx", edit), files, transform=semseg.transform())
    _assert_caught(report, {code})


def test_a_centre_crop_on_the_segmenter_is_reported_as_spec_invalid(segmenter, tmp_path):
    path, files = segmenter
    crop = edit_spec(path, tmp_path / "crop.onnx", lambda s: s["steps"].insert(1, {"op": "center_crop",
                                                                                     "size": [128, 128]}))
    report = edgeinfer.check(crop, images=files)
    assert report.codes() == ["spec_invalid"] and "no centre crop" in report.findings[0].message


# -- an embedder ------------------------------------------------------------------------------------------
def test_an_embedder_fed_the_other_channel_order_is_caught_against_its_transform(exported, crops, imagenet_transform,
                                                                                  tmp_path):
    """An embedder has no confidence to probe: the training transform is its reference."""
    import torch

    from converters import export_embedder
    from converters.reference import check as doctor

    net = copy.deepcopy(exported["resnet18"][0])
    net.fc = torch.nn.Identity()
    path = tmp_path / "embedder.onnx"
    export_embedder(net.eval(), path, transform=imagenet_transform, images=[cv2.imread(str(p))[..., ::-1]
                                                                          for p in crops[:3]])
    healthy = doctor(path, crops[:6], transform=imagenet_transform)
    assert healthy.ok and "channel_probe" not in healthy.measured, healthy.codes()
    report = doctor(_attached(path, tmp_path / "bgr.onnx", _order("bgr")), crops[:6], transform=imagenet_transform)
    _assert_caught(report, {"color_order"})
