"""Real detectors trained here (tests.material.shapes: coloured shapes on real photos, cached after the first
run) exported by Ultralytics' own exporter: edgeinfer equals Ultralytics' predictor on the same ONNX file,
and the PyTorch model in Ultralytics, on real frames of several aspect ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import edgeinfer
from test_detection import assert_same_as_ultralytics, ultralytics_result

os.environ.setdefault("YOLO_OFFLINE", "1")
pytestmark = pytest.mark.slow

# target: variants Ultralytics exports for it
CASES = {"detect": ("raw", "raw-dynamic", "nms"), "pose": ("raw", "nms"), "obb": ("raw", "nms"),
         "segment": ("raw", "raw-dynamic", "nms"),
         "detect-nmsfree": ("nmsfree", "nmsfree-dynamic")}


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Weights and ONNX exports per target: {target: {"pt": path, variant: onnx path}}."""
    from tests.material import shapes

    out = {}
    for target, variants in CASES.items():
        weights = shapes.train(target)
        files = shapes.export(weights, tmp_path_factory.mktemp(target), variants=variants)
        out[target] = {"pt": str(weights), **{k: str(v) for k, v in files.items()}}
    return out


def _frames(target: str) -> dict:
    from tests.material import shapes

    return {name: f.image for name, f in shapes.test_frames(target.split("-")[0]).items()}


@pytest.mark.parametrize("target, variant", [(t, v) for t, vs in CASES.items() for v in vs])
def test_trained_detector_equals_ultralytics_predictor_on_the_same_file(target, variant, trained):
    model = edgeinfer.load(trained[target][variant])
    found = []
    for name, frame in _frames(target).items():
        det = model.predict(frame)
        assert_same_as_ultralytics(det, ultralytics_result(trained[target][variant], frame))
        found.append(len(det))
    assert sum(found) >= len(found), f"a trained detector should find the drawn shapes: {found}"


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@pytest.mark.parametrize("target", ["detect", "pose", "obb", "segment"])
def test_trained_detector_matches_the_pytorch_model_in_ultralytics(target, trained):
    """The PyTorch predictor letterboxes to the minimal rectangle; a dynamic export at the same size does too
    (a static one pads to the square: another input, other scores). Matched one to one at IoU >= 0.99."""
    from tests.material import shapes
    from ultralytics import YOLO

    weights = trained[target]["pt"]
    files = shapes.export(weights, os.path.dirname(trained[target]["raw"]), variants=["raw-dynamic"])
    model = edgeinfer.load(files["raw-dynamic"])
    torch_model = YOLO(weights)
    matched = 0
    for name, frame in _frames(target).items():
        det = model.predict(frame)
        ref = torch_model.predict(frame, imgsz=640, verbose=False)[0]  # 640: the dynamic file's predictor size
        ref_xyxy = (ref.obb.xyxy if ref.obb is not None else ref.boxes.xyxy).numpy()
        ref_conf = (ref.obb.conf if ref.obb is not None else ref.boxes.conf).numpy()
        assert len(det) == len(ref_conf), name
        if not len(det):
            continue
        iou = _iou(det.xyxy, ref_xyxy)
        pairs = iou.argmax(axis=1)
        assert len(set(pairs)) == len(det) and np.all(iou.max(axis=1) >= 0.99), (name, iou.max(axis=1))
        np.testing.assert_allclose(det.confidence, ref_conf[pairs], atol=1e-3)
        if det.mask is not None:  # the PyTorch predictor's masks, mapped to the frame as ours are: IoU >= 0.98
            from test_detection import assert_same_masks

            assert_same_masks(det, ref[pairs], retina=False, min_iou=0.98)
        matched += len(det)
    assert matched > 0


class DetsLabels:
    """A user's own detector in the MMDeploy/SSD output style: ``dets`` (B, 100, 5) x1 y1 x2 y2 score in
    input pixels and ``labels`` (B, 100), the top 100 anchors by score (no NMS in the graph)."""

    def __new__(cls, yolo):
        import torch

        class Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = yolo

            def forward(self, x):
                y = self.net(x)
                y = y[0] if isinstance(y, (tuple, list)) else y  # (B, 4 + nc, A)
                xy, wh = y[:, :2].transpose(1, 2), y[:, 2:4].transpose(1, 2)
                boxes = torch.cat([xy - wh / 2, xy + wh / 2], 2)
                scores, labels = y[:, 4:].max(1)
                top, idx = scores.topk(100, dim=1)
                picked = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
                return torch.cat([picked, top[..., None]], 2), torch.gather(labels, 1, idx)

        return Module()


def test_a_users_own_detector_exports_with_a_postprocess_description_and_attach_reads_one(trained, tmp_path):
    """A trained network behind another tool's output layout: its own top-k, no NMS. (Trained weights give
    distinct scores; a top-k over tied scores is not the same set in torch and ONNX Runtime.)"""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils.ops import scale_boxes

    import converters

    yolo = YOLO(trained["detect"]["pt"])
    net = DetsLabels(yolo.model.float()).eval()
    labels = list(yolo.names.values())
    source = {"size": 320, "letterbox": True, "task": "detection",
              "postprocess": {"decoder": "dets_labels", "conf": 0.3}}
    report = converters.export_detector(net, tmp_path / "dets.onnx", source=source, labels=labels,
                                        images=list(_frames("detect").values()), output_names=("dets", "labels"),
                                        example_hw=(320, 320))  # the letterbox is always 320x320
    assert report.max_abs_diff < 1e-3 and report.spec.postprocess.outputs == ("dets", "labels")
    model = edgeinfer.load(tmp_path / "dets.onnx")
    for name, frame in _frames("detect").items():
        det = model.predict(frame)
        x = model.preprocess(frame)[None]
        with torch.no_grad():
            dets, labs = (t[0].numpy() for t in net(torch.from_numpy(x)))
        keep = np.flatnonzero(dets[:, 4] > 0.3)
        keep = keep[np.argsort(-dets[keep, 4], kind="stable")]
        want = scale_boxes(x.shape[2:], torch.from_numpy(dets[keep, :4].copy()), frame.shape[:2]).numpy()
        assert len(det) == len(keep), name
        np.testing.assert_allclose(det.xyxy, want, atol=0.01)
        np.testing.assert_array_equal(det.class_id, labs[keep])
        np.testing.assert_allclose(det.confidence, dets[keep, 4], atol=1e-5)
    assert sum(report.detections) > 0

    # the same graph, exported without a spec (a "foreign" file), gets one from the command line
    foreign = tmp_path / "foreign.onnx"
    import onnx

    proto = onnx.load(str(tmp_path / "dets.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    desc = tmp_path / "detector.json"
    desc.write_text(json.dumps(source))
    (tmp_path / "labels.txt").write_text("\n".join(labels))
    done = subprocess.run([sys.executable, "-m", "edgeinfer", "attach", str(foreign), "--from", str(desc),
                           "--labels", str(tmp_path / "labels.txt"), "-o", str(tmp_path / "attached.onnx")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = edgeinfer.load(tmp_path / "attached.onnx")
    assert again.spec.postprocess == model.spec.postprocess and again.spec.steps == model.spec.steps
    frame = _frames("detect")["1080p"]
    np.testing.assert_array_equal(again.predict(frame).xyxy, model.predict(frame).xyxy)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**source, "postprocess": {"decoder": "dets_labels", "nms_threshold": 0.5}}))
    done = subprocess.run([sys.executable, "-m", "edgeinfer", "attach", str(foreign), "--from", str(bad), "-o",
                           str(tmp_path / "never.onnx")], capture_output=True, text=True)
    assert done.returncode != 0 and "nms_threshold" in done.stderr and not (tmp_path / "never.onnx").exists()
