"""One exporter for every task: converters.export reads the task from its arguments, handles train mode the same
way for all of them, and refuses only what its task's gate (edgeinfer.tasks.gates) refuses -- judged on the
output's own scale, so a segmenter with large logits exports when its class maps agree."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

import edgeinfer
from edgeinfer.errors import ExportError
from edgeinfer.tasks import gates

os.environ.setdefault("YOLO_OFFLINE", "1")


# -- the gates, on arrays made from real photos -------------------------------------------------------------
def _photo_logits(name: str = "astronaut", scale: float = 1.0) -> np.ndarray:
    """(3, h, w) "logits" with a real photo's structure: boundaries everywhere. The channels are mixed by fixed
    weights, so that grey pixels (R = G = B) are not exact ties whose argmax any round-off would flip."""
    from skimage import data

    px = getattr(data, name)()[::8, ::8].astype(np.float64) @ np.array([[1.0, 0.2, -0.3], [0.1, 0.9, 0.4],
                                                                        [-0.2, 0.3, 1.1]])
    return (scale * (px - px.mean((0, 1))) / px.std()).transpose(2, 0, 1)


def _semantic(logits: np.ndarray) -> dict:
    return {"logits": logits, "class_map": logits.argmax(0)}


@pytest.mark.parametrize("scale", [1.0, 30.0, 1000.0])
def test_semantic_gate_scales_the_logit_tolerance_with_their_magnitude(scale):
    ref = _photo_logits(scale=scale)
    rng = np.random.default_rng(0)
    close = ref * (1 + 2e-6 * rng.standard_normal(ref.shape))  # float32 round-off of a correct export
    ok, figures = gates.semantic_segmentation([_semantic(ref)], [_semantic(close)])
    assert ok, figures
    assert figures["logits_max_abs"] == pytest.approx(np.abs(ref).max())
    if scale == 1000.0:  # an absolute 1e-3 on these logits would have refused this correct candidate
        assert figures["logits_max_abs_diff"] > 1e-3 and figures["logits_relative_diff"] < 1e-4
    # the same relative error 100x larger (a broken graph, whatever the scale) fails ...
    far = ref * (1 + 2e-2 * rng.standard_normal(ref.shape))
    assert not gates.semantic_segmentation([_semantic(ref)], [{"logits": far, "class_map": ref.argmax(0)}]).passed
    # ... and so do class maps that disagree on more than 0.1 % of the pixels, with equal logits
    wrong = ref.argmax(0).copy()
    wrong[: wrong.shape[0] // 20] = (wrong[: wrong.shape[0] // 20] + 1) % 3
    ok, figures = gates.semantic_segmentation([_semantic(ref)], [{"logits": ref, "class_map": wrong}])
    assert not ok and figures["min_pixel_agreement"] < 0.999


def test_classification_gate_wants_close_probabilities_and_the_same_top1_except_for_ties():
    logits = _photo_logits("coffee").reshape(3, -1).T[:200] * 3  # 200 images x 3 classes from a photo's pixels
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert gates.classification([{"probabilities": p} for p in probs], [{"probabilities": p + 1e-5} for p in probs])[0]
    decided = int(np.argmax(np.sort(probs, 1)[:, -1] - np.sort(probs, 1)[:, -2]))
    flipped = probs.copy()
    flipped[decided] = flipped[decided][::-1]  # a clear winner loses: the user sees another class
    ok, figures = gates.classification([{"probabilities": p} for p in probs], [{"probabilities": p} for p in flipped])
    assert not ok and figures["top1_disagreements"] == 1
    tie = np.array([0.40005, 0.39995, 0.2])  # within the tolerance: either order is right
    ok, figures = gates.classification([{"probabilities": tie}], [{"probabilities": tie[[1, 0, 2]]}])
    assert ok and figures["top1_ties"] == 1
    assert not gates.classification([{"probabilities": probs[0]}], [{"probabilities": probs[0] + 2e-3}]).passed


def test_detection_gate_pairs_boxes_and_judges_each_output_value_on_its_own_scale():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1500, (6, 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(20, 300, (6, 2))], 1)
    cls = np.array([0, 1, 2, 0, 1, 2])
    raw = np.concatenate([xyxy, rng.uniform(0.3, 1, (6, 1))], 1)[None]  # dets: pixels and scores in one tensor
    ref = [{"outputs": [raw], "xyxy": xyxy, "class_id": cls}]

    def cand(raw=raw, xyxy=xyxy, cls=cls):
        return [{"outputs": [raw], "xyxy": xyxy, "class_id": cls}]

    order = [1, 0, 2, 3, 5, 4]  # near-equal confidences may swap boxes: still the same detections
    ok, figures = gates.detection(ref, cand(raw=raw * (1 + 1e-5), xyxy=xyxy[order] + 0.3, cls=cls[order]))
    assert ok and figures["box_max_abs_diff"] == pytest.approx(0.3), figures
    assert figures["outputs_max_abs_diff"] > 1e-3  # 1e-5 of a 1700 px coordinate: above an absolute 1e-3
    assert not gates.detection(ref, cand(xyxy=xyxy + 0.8)).passed  # boxes beyond half a pixel
    assert not gates.detection(ref, cand(xyxy=xyxy[:5], cls=cls[:5])).passed  # a detection lost
    assert not gates.detection(ref, cand(cls=cls[::-1])).passed  # the right boxes, the wrong classes
    drifted = raw.copy()
    drifted[..., 4] += 0.01  # scores moved by 0.01: small next to the coordinates, not next to a score
    ok, figures = gates.detection(ref, cand(raw=drifted))
    assert not ok and figures["outputs_relative_diff"] == pytest.approx(0.01)


def test_embedding_gate_judges_the_angle_not_the_length():
    v = _photo_logits("chelsea").reshape(-1)[:512]
    assert gates.embedding([{"vector": v}], [{"vector": 1000 * v}]).passed
    ok, figures = gates.embedding([{"vector": v}], [{"vector": v + 0.05 * np.abs(v).max() * np.sin(np.arange(512))}])
    assert not ok and figures["min_cosine"] < 0.9999


def test_every_runtime_task_has_a_gate():
    from edgeinfer import tasks

    assert all(callable(t.gate) for t in tasks.TABLE.values())


# -- the exporter -----------------------------------------------------------------------------------------
torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(scope="module")
def lraspp():
    """torchvision's LR-ASPP trained here (tests/material/semseg.py) and its SemanticSegmentation preset."""
    from tests.material import semseg

    return semseg.train(progress=False), semseg.transform(), semseg.LABELS


def _torch_class_map(model, transform, path):
    from PIL import Image

    with Image.open(path) as f:
        rgb = f.convert("RGB")
    with torch.no_grad():
        logits = model(transform(rgb)[None])["out"]
    return F.interpolate(logits, size=(rgb.height, rgb.width), mode="bilinear", align_corners=False).argmax(1)[0].numpy()


@pytest.mark.slow
def test_export_reads_the_task_from_a_semantic_segmentation_preset(lraspp, photo_files, tmp_path):
    import converters

    model, transform, labels = lraspp
    path = tmp_path / "seg.onnx"
    report = converters.export(model, path, transform=transform, labels=labels, images=photo_files[:4])
    assert isinstance(report, converters.SegmenterExportReport) and report.min_pixel_agreement >= 0.999
    deployed = edgeinfer.load(path)
    assert deployed.spec.task == "semantic_segmentation" and deployed.spec.input.dynamic_size
    assert deployed.self_test().passed
    classes = set()
    for p in photo_files:  # JPEG and PNG photos of several sizes, most not seen by the export's verification
        ref = _torch_class_map(model, transform, p)
        got = deployed.predict(str(p)).class_map
        assert got.shape == ref.shape and np.mean(got == ref) >= 0.999, p
        classes |= set(np.unique(ref).tolist())
    assert len(classes) >= 2  # a trained model: not one class everywhere


@pytest.mark.slow
def test_a_segmenter_with_large_logits_exports_where_the_absolute_gate_refused_it(lraspp, photo_files, tmp_path):
    """Logits in the hundreds (the heads scaled up) have float32 round-off above an absolute 1e-3, yet every
    class map is the same: the relative gate passes what the user sees is right, and still refuses a real error."""
    import converters
    from tests.material import semseg

    model, transform, labels = lraspp
    big = copy.deepcopy(model)
    with torch.no_grad():
        for head in (big.classifier.low_classifier, big.classifier.high_classifier):
            head.weight.mul_(200)
            head.bias.mul_(200)
    images = [str(p) for p in photo_files[:4]] + [img[..., ::-1].copy() for img, _ in semseg.test_scenes(3)]
    path = tmp_path / "big.onnx"
    # strict: the batch-dependence check, too, must take round-off on logits in the thousands for what it is
    report = converters.export(big, path, transform=transform, labels=labels, images=images,
                               task="semantic_segmentation", strict=True)
    figures = report.verification
    assert figures["logits_max_abs"] >= 500  # magnitudes measured on these images: about 1,200 to 2,500
    assert report.logits_max_abs_diff > 1e-3  # the old gate (|logits| within 1e-3) would have refused this file
    assert figures["logits_relative_diff"] <= 1e-5 and report.min_pixel_agreement >= 0.999
    deployed = edgeinfer.load(path)
    for p in photo_files[:3]:
        assert np.mean(deployed.predict(str(p)).class_map == _torch_class_map(big, transform, p)) >= 0.999

    never = tmp_path / "never.onnx"  # a tolerance below the round-off: refused, nothing left behind
    with pytest.raises(ExportError, match=r"relative .* allowed 1e-09 of max\(1, \|logit\|\).*Nothing was written"):
        converters.export_segmenter(big, never, transform=transform, labels=labels, images=images[:1], atol=1e-9)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["big.onnx"]


def _classifier(tiny):
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=3), {"transform": tiny}


def _embedder(tiny):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    return net, {"transform": tiny, "task": "embedding"}


def _segmenter(tiny):
    from tests.material import semseg

    return copy.deepcopy(semseg.train(progress=False)), {"transform": semseg.transform()}


def _detector(tiny):
    from test_detection_trained import DetsLabels, _frames
    from tests.material import shapes
    from ultralytics import YOLO

    yolo = YOLO(shapes.train("detect"))
    source = {"size": 320, "letterbox": True, "task": "detection", "postprocess": {"decoder": "dets_labels", "conf": 0.3}}
    return DetsLabels(yolo.model.float()), {"source": source, "labels": list(yolo.names.values()),
                                            "images": list(_frames("detect").values())[:2],
                                            "output_name": ("dets", "labels"), "example_hw": (320, 320)}


@pytest.mark.slow
@pytest.mark.parametrize("task, build", [("classification", _classifier), ("embedding", _embedder),
                                         ("semantic_segmentation", _segmenter), ("detection", _detector)])
def test_every_task_warns_about_train_mode_and_refuses_it_when_strict(task, build, photos, tmp_path):
    import converters
    from converters.zoo import imagenet_eval_transform

    model, args = build(imagenet_eval_transform(72, 64))
    args.setdefault("images", list(photos.values())[:3])
    model.train()
    with pytest.raises(ExportError, match="train mode.*strict=True"):
        converters.export(model, tmp_path / "strict.onnx", strict=True, **args)
    assert model.training and not (tmp_path / "strict.onnx").exists()
    with pytest.warns(converters.ExportWarning, match="train mode"):
        report = converters.export(model, tmp_path / "m.onnx", **args)
    assert report.switched_to_eval and not model.training and any("train mode" in w for w in report.warnings)
    deployed = edgeinfer.load(tmp_path / "m.onnx")
    assert deployed.spec.task == task and report.verification["images"] >= 1
