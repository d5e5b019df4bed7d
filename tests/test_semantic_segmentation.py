"""Semantic segmentation: class maps in the original frame, equal to the training tools' post-processing.

Real material: a torchvision LR-ASPP segmenter trained here on the shapes scenes (tests/material/semseg.py),
exported with torchvision's own SemanticSegmentation preset (dynamic input size); a SegFormer built from a
config with a real ``preprocessor_config.json`` beside a plain ``torch.onnx.export``; real photos.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

import edgeinfer
from edgeinfer.errors import ImageError, SpecError
from edgeinfer.tasks.segmentation import Segmentation, class_map
from edgeinfer.spec import Spec

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _photo_frames() -> dict[str, np.ndarray]:
    """Real photos of several sizes and aspect ratios, as BGR frames."""
    from skimage import data

    frames = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee()}
    frames["portrait"] = np.ascontiguousarray(data.rocket()[:, 100:380])
    frames["small"] = cv2.resize(data.coffee(), (131, 97), interpolation=cv2.INTER_AREA)
    return {k: np.ascontiguousarray(v[..., ::-1]) for k, v in frames.items()}


# -- the map itself -------------------------------------------------------------------------------------
@pytest.mark.parametrize("classes,logits_hw,frame_hw,smooth", [
    (5, (24, 32), (333, 517), 4),     # upsampling, odd sizes
    (4, (32, 32), (20, 17), 4),       # downsampling
    (21, (65, 116), (540, 960), 16),  # smooth logits (few boundaries)
    (21, (65, 116), (540, 960), 2),   # boundaries everywhere (the dense path)
])
def test_class_map_equals_bilinear_upsampling_then_argmax(classes, logits_hw, frame_hw, smooth):
    rng = np.random.default_rng(classes)
    low = rng.normal(size=(classes, logits_hw[0] // smooth + 1, logits_hw[1] // smooth + 1)).astype(np.float32)
    logits = np.stack([cv2.resize(c, logits_hw[::-1], interpolation=cv2.INTER_CUBIC) for c in low])
    got = class_map(logits, frame_hw, (logits_hw[0] / frame_hw[0], logits_hw[1] / frame_hw[1]), (0.0, 0.0))
    ref = F.interpolate(torch.from_numpy(logits)[None], size=frame_hw, mode="bilinear",
                        align_corners=False).argmax(1)[0].numpy()
    assert got.shape == frame_hw
    assert np.mean(got == ref) >= 0.99999  # ties of float round-off only
    assert len(np.unique(ref)) > 1


def test_segmentation_result_round_trips_and_tabulates():
    m = np.zeros((40, 60), np.int32)
    m[5:20, 10:30] = 2
    m[30:, :] = 1
    seg = Segmentation(m, labels=("background", "road", "car"))
    d = seg.to_dict()
    assert d["size"] == [40, 60]
    assert [c["label"] for c in d["classes"]] == ["background", "road", "car"]
    assert sum(c["area"] for c in d["classes"]) == m.size
    import base64

    back = Segmentation.read_png(base64.b64decode(d["class_map_png"]))
    assert np.array_equal(back.class_map, m)
    wide = Segmentation(np.full((3, 4), 300, np.int32))  # beyond 256 classes: 16-bit PNG
    assert np.array_equal(Segmentation.read_png(wide.png()).class_map, wide.class_map)
    assert seg.rows()[2] == {"class_id": 2, "label": "car", "area": 300, "fraction": round(300 / 2400, 6)}
    with pytest.raises(ValueError):
        seg.class_map[0, 0] = 1
    with pytest.raises(ImageError, match="expected a frame of"):
        seg.overlay(np.zeros((10, 10, 3), np.uint8))


def test_a_semantic_spec_refuses_a_centre_crop():
    data = {"schema": "edgeinfer.spec/1", "task": "semantic_segmentation",
            "steps": [{"op": "resize", "size": 64, "rule": "shorter", "interpolation": "bilinear", "backend": "pil"},
                      {"op": "center_crop", "size": [64, 64]}, {"op": "to_float", "scale": "div255"}],
            "input": {"name": "input", "shape": [None, 3, 64, 64]}, "output": {"name": "out", "kind": "logits"}}
    with pytest.raises(SpecError, match="no centre crop for a semantic segmenter"):
        Spec.from_dict(data)


# -- torchvision, trained here ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lraspp(tmp_path_factory):
    from converters import export_segmenter
    from tests.material import semseg

    model = semseg.train(progress=False)
    frames = _photo_frames()
    scenes = [img for img, _ in semseg.test_scenes(3)]
    images = [f[..., ::-1].copy() for f in list(frames.values()) + scenes]  # RGB, as the exporter takes them
    path = tmp_path_factory.mktemp("lraspp") / "lraspp.onnx"
    report = export_segmenter(model, path, transform=semseg.transform(), labels=semseg.LABELS, images=images)
    return model, path, report, frames, scenes


@pytest.mark.slow
def test_torchvision_segmenter_matches_torch_on_photos_of_every_size(lraspp):
    model, path, report, frames, scenes = lraspp
    from tests.material import semseg

    # the export verified every image: logits at the model's resolution and class maps in the frame
    assert report.logits_max_abs_diff <= 1e-3
    assert report.min_pixel_agreement >= 0.999, report.pixel_agreement
    deployed = edgeinfer.load(path)
    assert deployed.spec.task == "semantic_segmentation"
    assert deployed.spec.input.dynamic_size
    assert deployed.self_test().passed
    transform = semseg.transform()
    from PIL import Image

    present = set()
    batch = list(frames.values()) + scenes
    for frame, seg in zip(batch, deployed.predict_batch(batch)):  # mixed sizes: one run per input size
        with torch.no_grad():
            logits = model(transform(Image.fromarray(frame[..., ::-1].copy()))[None])["out"]
        ref = F.interpolate(logits, size=frame.shape[:2], mode="bilinear", align_corners=False).argmax(1)[0].numpy()
        assert isinstance(seg, Segmentation) and seg.shape == frame.shape[:2]
        assert np.mean(seg.class_map == ref) >= 0.999
        assert np.array_equal(seg.class_map, deployed.predict(frame).class_map)
        present |= set(np.unique(seg.class_map).tolist())
    assert len(present) >= 3  # a trained model: shapes found, not a constant map
    # held-out scenes: the model finds the shapes (83 % of their pixels in the right class, measured)
    right = total = 0
    for img, truth in semseg.test_scenes(4):
        got = deployed.predict(img).class_map
        right += int(np.sum(got[truth > 0] == truth[truth > 0]))
        total += int(np.sum(truth > 0))
    assert right / total >= 0.7
    report = edgeinfer.check(path, images=scenes)
    assert "class_map_constant" not in report.codes() and report.measured["images"] == len(scenes)


@pytest.mark.slow
def test_segmenter_cli_writes_masks_and_inspect_shows_the_task(lraspp, tmp_path):
    _, path, _, frames, _ = lraspp
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, frame in frames.items():
        cv2.imwrite(str(folder / f"{name}.png"), frame)
    out, masks = tmp_path / "out.jsonl", tmp_path / "masks"
    cmd = [sys.executable, "-m", "edgeinfer", "predict", str(path), str(folder), "--out", str(out),
           "--masks", str(masks)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(frames)
    deployed = edgeinfer.load(path)
    for line in lines:
        png = masks / (line["image"].split("/")[-1].rsplit(".", 1)[0] + ".png")
        saved = Segmentation.read_png(png)
        again = deployed.predict(str(folder / line["image"].split("/")[-1]))
        assert np.array_equal(saved.class_map, again.class_map)
        assert sum(c["area"] for c in line["classes"]) == saved.class_map.size
    shown = subprocess.run([sys.executable, "-m", "edgeinfer", "inspect", str(path)], check=True,
                           capture_output=True, text=True).stdout
    assert "semantic_segmentation" in shown and "height" in shown


# -- Hugging Face SegFormer: the processor config beside a plain torch.onnx.export ----------------------
@pytest.mark.slow
def test_segformer_with_its_processor_config_matches_post_process_semantic_segmentation(tmp_path):
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    torch.manual_seed(0)
    config = transformers.SegformerConfig(num_labels=5, hidden_sizes=[16, 32, 64, 96], depths=[1, 1, 1, 1],
                                          num_attention_heads=[1, 2, 4, 4], decoder_hidden_size=64,
                                          id2label={i: f"class{i}" for i in range(5)},
                                          label2id={f"class{i}": i for i in range(5)})
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    processor = transformers.SegformerImageProcessor(size={"height": 128, "width": 128})
    processor.save_pretrained(tmp_path)
    config.save_pretrained(tmp_path)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(pixel_values=x).logits

    onnx_path = tmp_path / "segformer.onnx"
    with torch.no_grad():
        torch.onnx.export(Logits().eval(), (torch.zeros(1, 3, 128, 128),), str(onnx_path), input_names=["pixel_values"],
                          output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=18, dynamo=False)
    deployed = edgeinfer.load(onnx_path, spec=tmp_path)
    assert deployed.spec.task == "semantic_segmentation"
    assert deployed.labels == tuple(f"class{i}" for i in range(5))
    classes = set()
    for name, frame in _photo_frames().items():
        pil = Image.fromarray(frame[..., ::-1].copy())
        with torch.no_grad():
            out = model(**processor(images=pil, return_tensors="pt"))
        ref = processor.post_process_semantic_segmentation(out, target_sizes=[frame.shape[:2]])[0].numpy()
        seg = deployed.predict(frame)
        agree = np.mean(seg.class_map == ref)
        assert agree >= 0.999, (name, agree)
        classes |= set(np.unique(ref).tolist())
    assert len(classes) >= 2


# -- the doctor and the mask files ------------------------------------------------------------------------
@pytest.mark.slow
def test_doctor_finds_a_constant_class_map(tmp_path, photo_files):
    """A segmenter whose map is one class on every photo (what a dead BatchNorm or the wrong head gives)."""
    from converters import export_segmenter
    from tests.material import semseg

    net = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        net.weight.mul_(1e-3)
        net.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))
    path = tmp_path / "constant.onnx"
    export_segmenter(net.eval(), path, transform=semseg.transform(), labels=semseg.LABELS, output=None)
    report = edgeinfer.check(path, images=photo_files[:3])
    found = {f.code: f for f in report.findings}
    assert "class_map_constant" in found, report.codes()
    assert "square" in found["class_map_constant"].message and "BatchNorm" in found["class_map_constant"].fix


@pytest.mark.slow
def test_doctor_finds_masks_misaligned_with_their_boxes_and_masks_are_written(tmp_path):
    """Instance masks from the trained segment model: aligned as edgeinfer maps them; shifted by the
    letterbox padding (masks not cut out of the letterbox, the fault of ultralytics#4344) they are caught."""
    import dataclasses

    from tests.material import shapes
    from edgeinfer import tasks
    from edgeinfer.tasks.detections import Detections

    weights = shapes.train("segment")
    onnx = shapes.export(weights, tmp_path, variants=("raw",))["raw"]
    model = edgeinfer.load(onnx)
    frames = {n: f.image for n, f in shapes.test_frames("segment").items()}
    results = [(model.predict(f), f.shape[:2]) for f in frames.values()]
    assert sum(len(d) for d, _ in results) >= 3
    checks = tasks.get("segment").checks

    def check(spec, results):
        return checks(spec, tasks.Evidence(results, []), {})

    assert not [f for f in check(model.spec, results) if f["code"] == "masks_misaligned"]
    shifted = []
    for det, hw in results:
        moved = np.roll(det.mask, shift=(hw[0] // 3, hw[1] // 3), axis=(1, 2))
        shifted.append((dataclasses.replace(det, mask=moved), hw))
    codes = {f["code"]: f for f in check(model.spec, shifted)}
    assert "masks_misaligned" in codes and codes["masks_misaligned"]["details"]["mask_pixels_in_boxes"] < 0.9
    # the instance map written by `predict --masks`: pixel = 1 + detection index, the most confident on top
    det = next(d for d, _ in results if len(d) >= 1)
    inst = det.instance_map()
    assert isinstance(det, Detections) and inst.max() == len(det)
    for i in range(len(det)):
        assert np.all(det.mask[i][inst == i + 1])
    folder, out, masks = tmp_path / "frames", tmp_path / "out.jsonl", tmp_path / "masks"
    (folder / "sub").mkdir(parents=True)
    for n, f in frames.items():
        cv2.imwrite(str(folder / "sub" / f"{n}.png"), f)
    subprocess.run([sys.executable, "-m", "edgeinfer", "predict", str(onnx), str(folder), "--out", str(out),
                    "--masks", str(masks)], check=True, capture_output=True, text=True)
    for n in frames:
        saved = Segmentation.read_png(masks / f"{n}.png").class_map
        again = model.predict(str(folder / "sub" / f"{n}.png"))
        assert np.array_equal(saved, again.instance_map())


# Each fault a semantic segmenter's spec can carry, injected into the trained LR-ASPP's file, with the doctor
# code it must raise: the input resized to another size, another normalisation, the channels reversed by the
# input contract, a centre crop (refused: the class map must cover the frame).
def _normalize(spec, **params):
    for step in spec["steps"]:
        if step["op"] == "normalize":
            step.update(params)


SEGMENTER_FAULTS = {
    "resize_mismatch": lambda s: next(st for st in s["steps"] if st["op"] == "resize").update(size=96),
    "input_stats": lambda s: _normalize(s, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
    "color_order": lambda s: s["input"].update(channel_order="bgr"),
    "spec_invalid": lambda s: s["steps"].insert(1, {"op": "center_crop", "size": [96, 96]}),
}


@pytest.mark.slow
def test_the_doctor_with_the_training_transform_names_each_segmenter_fault(lraspp, photo_files, tmp_path):
    from conftest import edit_spec
    from converters import check
    from tests.material import semseg

    _, path, _, _, _ = lraspp
    images = photo_files[:4]
    healthy = check(path, images, transform=semseg.transform())
    assert not [f for f in healthy.findings if f.severity == "error"], healthy.codes()
    assert healthy.measured["reference_max_levels"] <= 1.01
    for code, edit in SEGMENTER_FAULTS.items():
        broken = edit_spec(path, tmp_path / f"{code}.onnx", edit)
        report = check(broken, images, transform=semseg.transform())
        found = {f.code: f for f in report.findings}
        assert code in found and found[code].severity == "error" and found[code].fix, (code, report.codes())
