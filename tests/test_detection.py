"""Detectors on the device: every Ultralytics output layout against Ultralytics' own predictor, NMS and the
inverse geometry against the tool's functions, specs, results and the command line.

The layout tests use architectures built from Ultralytics' yamls with their class-score heads scaled up
(random weights otherwise score ~1e-5 and nothing passes conf 0.25): hundreds of overlapping candidates per
frame, which exercises NMS, ties and the padding rows hard. Trained detectors are in test_detection_trained.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import edgeinfer
from edgeinfer.tasks import nms
from edgeinfer.pipeline import ops
from edgeinfer.tasks.detections import Detections
from edgeinfer.errors import SpecError
from edgeinfer.spec import Spec

os.environ.setdefault("YOLO_OFFLINE", "1")

# name: (yaml, export arguments)
LAYOUTS = {
    "detect_raw": ("yolo11n.yaml", {}),
    "detect_raw_dynamic": ("yolo11n.yaml", {"dynamic": True}),
    "detect_nms": ("yolo11n.yaml", {"nms": True}),
    "pose_raw": ("yolo11n-pose.yaml", {}),
    "pose_nms": ("yolo11n-pose.yaml", {"nms": True}),
    "obb_nms": ("yolo11n-obb.yaml", {"nms": True}),
    "yolo26_end2end": ("yolo26n.yaml", {"nms": False}),
    "yolo26_pose_end2end": ("yolo26n-pose.yaml", {"nms": False}),
    "yolo26_obb_end2end": ("yolo26n-obb.yaml", {"nms": False}),
    "rtdetr": ("rtdetr-l.yaml", {}),
    "segment_raw": ("yolo11n-seg.yaml", {}),
    "segment_raw_dynamic": ("yolo11n-seg.yaml", {"dynamic": True}),
    "segment_nms": ("yolo11n-seg.yaml", {"nms": True}),
}


def _scaled_head(model, gain: float = 3.0) -> None:
    """Class scores that clear 0.25 on random weights: zero the class biases, amplify the class convs (by 3
    many saturate at 1.0 and tie; by 1 they spread around 0.5)."""
    head = model.model.model[-1]
    for name in ("cv3", "one2one_cv3"):
        for seq in getattr(head, name, None) or []:
            seq[-1].bias.data[:] = 0.0
            seq[-1].weight.data *= gain
    for layer in getattr(head, "dec_score_head", None) or []:
        layer.bias.data[:] = 0.0
        layer.weight.data *= gain
    proto = getattr(head, "proto", None)
    if proto is not None:  # prototypes that are positive somewhere, so masks are not all empty
        import torch

        proto.cv3.conv.bias = None
        torch.nn.init.constant_(proto.cv3.bn.bias, 3.0)


@pytest.fixture(scope="session")
def layouts(tmp_path_factory) -> dict[str, str]:
    """Every layout exported once by Ultralytics' own exporter (imgsz 320; RT-DETR at 320 too)."""
    from ultralytics import RTDETR, YOLO

    folder = tmp_path_factory.mktemp("layouts")
    out = {}
    for name, (yaml, kwargs) in LAYOUTS.items():
        cwd = os.getcwd()
        os.chdir(folder)  # the exporter writes next to the weights it was given (none here: the cwd)
        try:
            import torch

            torch.manual_seed(0)  # the same random architecture on every run
            model = RTDETR(yaml) if yaml.startswith("rtdetr") else YOLO(yaml)
            _scaled_head(model)
            f = folder / model.export(format="onnx", imgsz=320, simplify=False, verbose=False, **kwargs)
        finally:
            os.chdir(cwd)
        out[name] = str(shutil.move(f, folder / f"{name}.onnx"))
    return out


def frames() -> dict[str, np.ndarray]:
    """Real photos as BGR frames of several aspect ratios: landscape, portrait, small, odd, 1080p."""
    from skimage import data

    bgr = lambda a: np.ascontiguousarray(a[..., ::-1])  # noqa: E731
    return {"landscape_512x512": bgr(data.astronaut()), "portrait_400x300": bgr(data.coffee()[:, :300]),
            "odd_300x451": bgr(data.chelsea()), "small_90x160": cv2.resize(bgr(data.rocket()), (160, 90)),
            "1080p": cv2.resize(bgr(data.rocket()), (1920, 1080))}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["segment_raw", "segment_nms"])
def test_instance_masks_in_both_of_the_tools_modes(layout, layouts):
    """retina_masks=True: masks computed at the frame's size; the default: at the input's, mapped back."""
    model = edgeinfer.load(layouts[layout])
    assert model.spec.task == "segment" and model.spec.postprocess.outputs == ("output0", "output1")
    found = 0
    for name, frame in frames().items():
        det = model.detect([frame], retina_masks=True)[0]
        ref = ultralytics_result(layouts[layout], frame, retina_masks=True)
        assert_same_as_ultralytics(det, ref)
        assert det.mask.shape[1:] == frame.shape[:2]
        if len(det):
            d = det.to_dict()["detections"][0]
            assert det.mask[0].any() and d["area"] == int(det.mask[0].sum()) and d["polygons"]
        found += len(det)
    assert found > 0


def ultralytics_result(path: str, frame: np.ndarray, **kwargs):
    from ultralytics import RTDETR, YOLO

    meta = edgeinfer.load(path).spec.provenance
    model = RTDETR(path) if "rtdetr" in path else YOLO(path, task=meta["ultralytics_task"])
    return model.predict(frame, verbose=False, **kwargs)[0]


def assert_same_masks(det: Detections, ref, *, retina: bool, min_iou: float = 0.99) -> None:
    """Instance masks: the tool's own (at the input size, or in the frame with retina_masks) against ours,
    mapped to the frame the same way, IoU >= 0.99 per instance (equal empty masks count as equal)."""
    from edgeinfer.tasks import decoders as detect

    want = ref.masks.data.numpy().astype(bool)
    h, w = ref.orig_shape
    if not retina:
        top, bottom, left, right = detect._content_window(want.shape[1:], (h, w))
        want = np.stack([cv2.resize(m[top:bottom, left:right].astype(np.uint8), (w, h),
                                    interpolation=cv2.INTER_NEAREST) for m in want]).astype(bool)
    assert det.mask.shape == want.shape
    inter = (det.mask & want).sum(axis=(1, 2))
    union = (det.mask | want).sum(axis=(1, 2))
    iou = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    assert iou.min(initial=1.0) >= min_iou, iou.min(initial=1.0)


def assert_same_as_ultralytics(det: Detections, ref, *, box_px: float = 0.01, conf: float = 1e-5) -> None:
    """The issue's bar: same count and classes, boxes within 0.01 px, confidences within 1e-5."""
    if ref.obb is not None:
        want_box, want_conf, want_cls = ref.obb.xywhr.numpy(), ref.obb.conf.numpy(), ref.obb.cls.numpy()
        got_box = det.xywhr
    else:
        want_box, want_conf, want_cls = ref.boxes.xyxy.numpy(), ref.boxes.conf.numpy(), ref.boxes.cls.numpy()
        got_box = det.xyxy
    assert len(det) == len(want_conf)
    np.testing.assert_array_equal(det.class_id, want_cls.astype(np.int64))
    if ref.masks is not None and len(det):
        assert_same_masks(det, ref, retina=ref.masks.data.shape[1:] == ref.orig_shape)
    np.testing.assert_allclose(got_box, want_box, rtol=0, atol=box_px)
    np.testing.assert_allclose(det.confidence, want_conf, rtol=0, atol=conf)
    if ref.keypoints is not None and len(det):
        np.testing.assert_allclose(det.keypoints, ref.keypoints.data.numpy(), rtol=0, atol=box_px)


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_ultralytics_layout_gives_what_its_predictor_gives(layout, layouts):
    model = edgeinfer.load(layouts[layout])  # no attach step: Ultralytics' metadata says it all
    assert model.spec.postprocess.rules.startswith("ultralytics==")
    counts = []
    for name, frame in frames().items():
        det = model.predict(frame)
        assert_same_as_ultralytics(det, ultralytics_result(layouts[layout], frame))
        counts.append(len(det))
    assert max(counts) > 0, "the scaled heads should detect something"


@pytest.mark.slow
def test_dynamic_exports_letterbox_to_the_minimal_stride_rectangle(layouts):
    dynamic, static = edgeinfer.load(layouts["detect_raw_dynamic"]), edgeinfer.load(layouts["detect_raw"])
    frame = frames()["1080p"]
    assert dynamic.preprocess(frame).shape == (3, 384, 640)  # predictor default 640, padded to stride 32
    assert static.preprocess(frame).shape == (3, 320, 320)  # the full square of the exported size
    # a batch of mixed sizes falls back to the full square, so it stacks (Ultralytics' rule)
    both = dynamic.predict_batch([frame, frames()["portrait_400x300"]])
    one = dynamic.predict(frames()["portrait_400x300"])
    assert len(both) == 2 and both[1].class_id.shape == both[1].confidence.shape
    assert dynamic.preprocess(frames()["portrait_400x300"]).shape == (3, 640, 480)
    assert len(one) > 0


@pytest.mark.slow
def test_a_dynamic_export_runs_at_the_size_asked_for_as_the_predictors_imgsz(layouts):
    path = layouts["detect_raw_dynamic"]
    at_320 = edgeinfer.load(path, imgsz=320)
    assert at_320.preprocess(frames()["1080p"]).shape == (3, 192, 320)  # minimal stride rectangle of 320
    assert edgeinfer.load(path, imgsz=300).spec.steps[0].params["size"] == [320, 320]  # check_imgsz rounds up
    found = 0
    for frame in frames().values():
        det = at_320.predict(frame)
        assert_same_as_ultralytics(det, ultralytics_result(path, frame, imgsz=320))
        found += len(det)
    assert found > 0
    # the doctor: a dynamic file run at the predictor's default 640 although exported at 320
    from edgeinfer.tools.check import check

    assert "imgsz_differs" in check(path).codes()
    assert "imgsz_differs" not in check(path, imgsz=320).codes()
    # a fixed graph runs at its own size only
    from edgeinfer.errors import ModelError

    assert edgeinfer.load(layouts["detect_raw"], imgsz=320).spec == edgeinfer.load(layouts["detect_raw"]).spec
    with pytest.raises(ModelError, match=r"imgsz \[640, 640\].*fixed at \[320, 320\]"):
        edgeinfer.load(layouts["detect_raw"], imgsz=640)


def test_a_spec_attached_to_an_ultralytics_file_keeps_its_class_names(layouts):
    path = layouts["detect_raw"]
    own = edgeinfer.load(path)
    given = own.spec.to_dict()
    given.pop("labels")
    attached = edgeinfer.load(path, spec=given)
    assert attached.labels == own.labels and len(own.labels) == 80
    assert attached.spec.provenance["labels"] == "the file's metadata (names)"
    frame = frames()["landscape_512x512"]
    assert attached.predict(frame).to_dict() == own.predict(frame).to_dict()
    # labels the user gives win
    mine = [f"c{i}" for i in range(80)]
    assert edgeinfer.load(path, spec=given, labels=mine).labels == tuple(mine)
    # on another engine too: the names come from the .onnx file's metadata, not from ONNX Runtime's session
    pytest.importorskip("openvino")  # the [openvino] extra; ./edge test installs it
    on_openvino = edgeinfer.load(path, spec=given, engine="openvino")
    assert on_openvino.labels == own.labels and on_openvino.engine == "openvino"
    x = own.prepare([frame])  # untrained weights: near-tied scores, so the graphs' outputs are compared
    for got, want in zip(on_openvino.infer(x), own.infer(x)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_greedy_nms_keeps_what_torchvision_keeps():
    torch = pytest.importorskip("torch")
    import torchvision

    rng = np.random.default_rng(0)
    for seed in range(20):
        n = int(rng.integers(1, 3000))
        xy = rng.uniform(0, 600, (n, 2)).astype(np.float32)
        wh = rng.uniform(2, 200, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], 1)
        scores = rng.choice(rng.uniform(0.25, 1, 50), n).astype(np.float32)  # many exact ties
        classes = rng.integers(0, 80, n)
        shifted = torch.from_numpy(boxes + classes[:, None].astype(np.float32) * np.float32(7680))
        want = torchvision.ops.nms(shifted, torch.from_numpy(scores), 0.7).numpy()
        np.testing.assert_array_equal(nms.batched_nms(boxes, scores, classes, 0.7, max_wh=7680), want)
        np.testing.assert_array_equal(nms.nms(boxes, scores, 0.45),
                                      torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.45))


def test_rotated_nms_is_ultralytics_fast_nms_with_probiou():
    torch = pytest.importorskip("torch")
    from ultralytics.utils.metrics import batch_probiou
    from ultralytics.utils.nms import TorchNMS

    rng = np.random.default_rng(1)
    for _ in range(10):
        n = 500
        b = np.concatenate([rng.uniform(0, 300, (n, 2)), rng.uniform(5, 80, (n, 2)), rng.uniform(-0.7, 2.3, (n, 1))],
                           1).astype(np.float32)
        s = rng.uniform(0.25, 1, n).astype(np.float32)
        np.testing.assert_allclose(nms.probiou(b, b), batch_probiou(torch.from_numpy(b), torch.from_numpy(b)).numpy(),
                                   atol=2e-4)
        want = TorchNMS.fast_nms(torch.from_numpy(b), torch.from_numpy(s), 0.7, iou_func=batch_probiou).numpy()
        np.testing.assert_array_equal(nms.nms_rotated(b, s, 0.7), want)


@pytest.mark.parametrize("auto", [False, True])
def test_letterbox_inverse_is_ultralytics_scale_boxes(auto):
    torch = pytest.importorskip("torch")
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(2)
    for h, w in [(1080, 1920), (1920, 1080), (481, 641), (200, 300), (7, 1500), (333, 333), (90, 160)]:
        p = {"size": [640, 640], "auto": auto, "stride": 32}
        chain = ops.placements([("letterbox", p)], h, w)
        oh, ow = chain[0].out_hw
        assert (oh, ow) == ops.letterbox(np.zeros((h, w, 3), np.uint8), p).shape[:2]
        boxes = np.sort(rng.uniform(0, [ow, oh, ow, oh], (50, 4)).astype(np.float32).reshape(50, 2, 2), axis=1)
        boxes = boxes.reshape(50, 4)[:, [0, 2, 1, 3]].copy()
        boxes = np.stack([np.minimum(boxes[:, 0], boxes[:, 1]), np.minimum(boxes[:, 2], boxes[:, 3]),
                          np.maximum(boxes[:, 0], boxes[:, 1]), np.maximum(boxes[:, 2], boxes[:, 3])], 1)
        want = scale_boxes((oh, ow), torch.from_numpy(boxes.copy()), (h, w)).numpy()
        got = ops.to_source(boxes.reshape(-1, 2, 2), chain).reshape(-1, 4)
        got[:, [0, 2]] = np.clip(got[:, [0, 2]], 0, w)
        got[:, [1, 3]] = np.clip(got[:, [1, 3]], 0, h)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("steps", [
    [("resize", {"rule": "shorter", "size": 256, "interpolation": "bilinear"}), ("center_crop", {"size": [224, 224]})],
    [("resize", {"rule": "exact", "size": [300, 200], "interpolation": "bilinear"}), ("pad", {"padding": [5, 7, 3, 1]})],
    [("center_crop", {"size": [700, 700]})],  # larger than the image: padded first, as torchvision does
])
def test_every_geometric_op_maps_points_back_to_where_they_were(steps):
    """A bright dot drawn in the original lands where the forward op puts it; the inverse brings it home."""
    h, w = 480, 640
    img = np.zeros((h, w, 3), np.uint8)
    y0, x0 = 150, 400
    img[y0 - 4:y0 + 4, x0 - 4:x0 + 4] = 255
    out = img
    for name, p in steps:
        out = ops.get(name).run(out, ops.get(name).with_defaults(p))
    ys, xs = np.nonzero(out[..., 0] > 127)
    centre_out = np.array([[xs.mean() + 0.5, ys.mean() + 0.5]], np.float32)
    back = ops.to_source(centre_out, ops.placements(steps, h, w))[0]
    assert np.abs(back - [x0, y0]).max() < 1.0
    assert ops.placements(steps, h, w)[-1].out_hw == out.shape[:2]


def test_spec_round_trips_and_refuses_unknown_decoders_by_name(layouts_spec):
    data = layouts_spec.to_dict()
    assert Spec.from_json(json.dumps(data)) == layouts_spec
    data["postprocess"]["decoder"] = "yolox_raw"
    with pytest.raises(SpecError, match="postprocess.decoder.*'yolox_raw'"):
        Spec.from_dict(data)
    data["postprocess"] = None
    with pytest.raises(SpecError, match="postprocess"):
        Spec.from_dict(data)  # a detector without its postprocess section
    classifier = {**data, "task": "classification", "output": {"name": "out", "kind": "logits"},
                  "steps": [{"op": "to_float", "scale": "div255"}], "labels": None}
    assert Spec.from_dict(classifier).postprocess is None  # specs written before detectors still load


@pytest.fixture()
def layouts_spec() -> Spec:
    return Spec.from_dict({
        "schema": "edgeinfer.spec/1", "task": "pose",
        "steps": [{"op": "letterbox", "size": [320, 320], "auto": False}, {"op": "to_float", "scale": "div255"}],
        "input": {"name": "images", "shape": [1, 3, 320, 320]}, "output": {"name": "output0", "kind": "raw"},
        "labels": ["person"],
        "postprocess": {"decoder": "ultralytics_raw", "outputs": ["output0"], "kpt_shape": [17, 3]}})


def test_detections_index_convert_and_tabulate():
    d = Detections(np.array([[1, 2, 30, 40], [5, 5, 9, 9]]), np.array([0.9, 0.4]), np.array([1, 0]),
                   labels=["cat", "dog"])
    assert len(d) == 2 and d.class_name == ["dog", "cat"]
    strong = d[d.confidence > 0.5]
    assert len(strong) == 1 and strong.class_name == ["dog"] and strong.xyxy.tolist() == [[1, 2, 30, 40]]
    assert d.to_dict()["detections"][1] == {"label": "cat", "class_id": 0, "confidence": pytest.approx(0.4),
                                            "xyxy": [5.0, 5.0, 9.0, 9.0]}
    assert [r["x2"] for r in d.rows()] == [30.0, 9.0]
    with pytest.raises(ValueError):
        d.xyxy[0, 0] = 3  # results are read-only
    sv = d.to_supervision()
    assert np.array_equal(sv.xyxy, d.xyxy) and sv.data["class_name"].tolist() == ["dog", "cat"]
    r = Detections(np.zeros((1, 4)), [0.8], [2], xywhr=np.array([[50, 40, 20, 10, np.pi / 2]]))
    np.testing.assert_allclose(r.xyxyxyxy[0].min(0), [45, 30], atol=1e-4)  # turned a quarter: 10 wide, 20 high


@pytest.mark.slow
def test_detectors_predict_to_folder_files_and_refuse_tta(layouts, tmp_path, photo_files):
    path = layouts["detect_nms"]
    model = edgeinfer.load(path)
    with pytest.raises(SpecError, match="tta 'hflip'.*detection"):
        model.predict(frames()["1080p"], tta="hflip")
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in photo_files[:3]:
        shutil.copy(f, folder / f.name)
    out = tmp_path / "boxes.csv"
    cmd = [sys.executable, "-m", "edgeinfer", "predict", path, str(folder), "--out", str(out)]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    import csv

    rows = list(csv.DictReader(out.open()))
    assert rows and set(rows[0]) == {"image", "label", "class_id", "confidence", "x1", "y1", "x2", "y2"}
    for f in photo_files[:3]:
        want = model.predict(str(folder / f.name))
        mine = [r for r in rows if r["image"] == str(folder / f.name)]
        assert len(mine) == max(len(want), 1)
        if len(want):
            np.testing.assert_allclose([float(r["x1"]) for r in mine], want.xyxy[:, 0], atol=1e-5)
    printed = subprocess.run([sys.executable, "-m", "edgeinfer", "predict", path, str(photo_files[0]), "--json"],
                             capture_output=True, text=True, check=True).stdout
    assert json.loads(printed)[0]["detections"] == model.predict(str(photo_files[0])).to_dict()["detections"]



@pytest.mark.slow
def test_camera_loop_runs_a_detector_over_a_video_with_overlays_and_jsonl(layouts, tmp_path):
    path = layouts["detect_nms"]
    video = tmp_path / "clip.mp4"
    shots = [cv2.resize(f, (640, 360)) for f in frames().values()]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 360))
    for f in shots * 2:
        writer.write(f)
    writer.release()
    out, jsonl = tmp_path / "annotated.mp4", tmp_path / "detections.jsonl"
    done = subprocess.run([sys.executable, "-m", "edgeinfer", "camera", path, "--source", str(video), "--out", str(out),
                           "--jsonl", str(jsonl)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 2 * len(shots) and all("detections" in r for r in rows)
    model = edgeinfer.load(path)
    cap = cv2.VideoCapture(str(video))
    for row in rows:
        ok, frame = cap.read()
        assert ok
        assert row["detections"] == model.predict(frame).to_dict()["detections"]
    annotated = cv2.VideoCapture(str(out))
    ok, first = annotated.read()
    assert ok and first.shape == (360, 640, 3)
    assert np.abs(first.astype(int) - shots[0].astype(int)).mean() > 1  # boxes and labels were drawn


def _with_spec(src: str, dst, edit) -> str:
    """A copy of an Ultralytics file carrying an edgeinfer spec changed by ``edit`` (a deployment mistake)."""
    import dataclasses

    import onnx

    from converters.attach import write_with_spec

    spec = edgeinfer.load(src).spec
    write_with_spec(onnx.load(src), dst, edit(spec, dataclasses))
    return str(dst)


def _step(spec, op, **changes):
    from edgeinfer.spec import Step

    return tuple(Step(s.op, {**s.params, **changes}) if s.op == op else s for s in spec.steps)


FAULTS = {
    "letterbox_missing": ("detect_raw", lambda s, dc: dc.replace(s, steps=(
        edgeinfer.Step("resize", {"rule": "exact", "size": [320, 320], "interpolation": "bilinear",
                                  "backend": "opencv"}),) + s.steps[1:])),
    "letterbox_fill": ("detect_raw", lambda s, dc: dc.replace(s, steps=_step(s, "letterbox", fill=0))),
    "letterbox_auto": ("detect_raw_dynamic", lambda s, dc: dc.replace(s, steps=_step(s, "letterbox", auto=False))),
    "letterbox_center": ("detect_raw", lambda s, dc: dc.replace(s, steps=_step(s, "letterbox", center=False))),
    "channel_order": ("detect_raw", lambda s, dc: dc.replace(s, input=dc.replace(s.input, channel_order="bgr"))),
    "boxes_empty": ("detect_raw", lambda s, dc: dc.replace(s, postprocess=dc.replace(s.postprocess, conf=1.0))),
    "boxes_clipped": ("detect_nms", lambda s, dc: dc.replace(s, postprocess=dc.replace(s.postprocess, decoder="detr"))),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_doctor_finds_each_detector_deployment_fault_and_says_the_fix(fault, layouts, tmp_path, photo_files):
    base, edit = FAULTS[fault]
    broken = _with_spec(layouts[base], tmp_path / "broken.onnx", edit)
    report = edgeinfer.check(broken, images=photo_files[:4])
    found = {f.code: f for f in report.findings}
    assert fault in found, report.codes()
    assert found[fault].severity in ("error", "warning") and found[fault].fix
    healthy = edgeinfer.check(layouts[base], images=photo_files[:4])
    assert healthy.ok, healthy.codes()
    assert healthy.measured["detections"] > 0 and healthy.measured["images"] == 4
    # the spec the tool's rule implies, attached by hand: every field compared, none differs
    same = edgeinfer.check(_with_spec(layouts[base], tmp_path / "same.onnx", lambda s, dc: s), images=photo_files[:4])
    assert same.ok, same.codes()
