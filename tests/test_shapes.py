"""The shapes detectors: labels Ultralytics reads as the pixels drawn, cached training, and exported files
that Ultralytics' own predictor runs to find the shapes on held-out photos."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.material import shapes
from tests.material.shapes import Shape

os.environ.setdefault("YOLO_OFFLINE", "1")


def _components(image: np.ndarray, background: np.ndarray) -> list[np.ndarray]:
    """Pixel coordinates (N, 2) x, y of each blob where the image differs from its background."""
    changed = np.any(image != background, axis=2).astype(np.uint8)
    n, lab = cv2.connectedComponents(changed, connectivity=8)
    blobs = [np.argwhere(lab == i)[:, ::-1] for i in range(1, n)]
    return [b for b in blobs if len(b) > 20]  # a few pixels may equal the background colour by chance


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def _ultralytics_labels(root: Path, task: str, index: int):
    """The label file as Ultralytics' own loader verifies and parses it."""
    from ultralytics.data.utils import verify_image_label

    im = root / "images" / "train" / f"{index:05d}.png"
    lb = root / "labels" / "train" / f"{index:05d}.txt"
    out = verify_image_label((str(im), str(lb), "", task == "pose", len(shapes.CLASSES), 3, 3, False))
    assert out[-1] == "" and out[8] == 0, out[-1]  # no message, not corrupt
    return out


@pytest.mark.parametrize("task", shapes.TASKS)
def test_labels_as_ultralytics_reads_them_cover_exactly_the_drawn_pixels(tmp_path, task):
    from ultralytics.data.utils import polygon2mask

    root = tmp_path / task
    shapes.build_dataset(root, task, n_train=8, n_val=2, seed=3)
    photos = {n: shapes.load_photo(n) for n in shapes.TRAIN_PHOTOS}
    checked = 0
    for i in range(8):
        background, image, drawn = shapes.scene(3, i, task=task, photos=photos)
        assert np.array_equal(cv2.imread(str(root / "images" / "train" / f"{i:05d}.png")), image)
        _, lb, (h, w), segments, keypoints, *_ = _ultralytics_labels(root, task, i)
        blobs = _components(image, background)
        assert len(blobs) == len(lb) == len(drawn)
        scale = np.array([w, h], float)
        for j, row in enumerate(lb):
            cx, cy, bw, bh = row[1:] * np.r_[scale, scale]
            # the blob whose centre is nearest this label's
            blob = min(blobs, key=lambda b: np.hypot(*(b.mean(0) - (cx, cy))))
            x1, y1 = blob.min(0)
            x2, y2 = blob.max(0) + 1  # pixel j spans [j, j+1)
            assert int(row[0]) == drawn[j].cls
            if task == "obb":
                poly = (segments[j] * scale).astype(np.float32)
                # every drawn pixel lies inside the rotated box, and the box is no larger than the shape's frame
                inside = [cv2.pointPolygonTest(poly, (float(x) + 0.5, float(y) + 0.5), True) for x, y in blob]
                assert min(inside) > -1.5  # cv2 fills every pixel the outline touches
                # and its sides are those of the smallest rotated rectangle around the pixels (pixel centres + 1)
                sides = sorted(np.hypot(*(poly - np.roll(poly, 1, 0)).T)[:2])
                np.testing.assert_allclose(sides, sorted(np.add(cv2.minAreaRect(blob.astype(np.float32))[1], 1)),
                                           atol=3.0)
            else:
                np.testing.assert_allclose([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], [x1, y1, x2, y2],
                                           atol=1.5)  # cv2 fills every pixel the outline touches
            if task == "segment":
                # the polygon, filled the way Ultralytics makes its mask targets, is the blob drawn
                target = polygon2mask((h, w), [segments[j].ravel() * np.tile(scale, len(segments[j]))])
                drawn_px = np.zeros((h, w), bool)
                drawn_px[blob[:, 1], blob[:, 0]] = True
                assert _iou(target.astype(bool), drawn_px) > 0.93  # 0.96-1.0 here; 0.5 px shifts on 24 px shapes
                # and to the sub-pixel: every drawn pixel's centre lies within the outline
                poly = (segments[j] * scale).astype(np.float32)
                inside = [cv2.pointPolygonTest(poly, (float(x) + 0.5, float(y) + 0.5), True) for x, y in blob]
                assert min(inside) > -1.0 and len(segments[j]) == len(drawn[j].polygon())
            if task == "pose":
                kp = keypoints[j]
                assert kp.shape == (3, 3) and np.all(kp[:, 2] > 0)
                for x, y in kp[:, :2] * scale:  # each keypoint on the shape's outline (a corner or the rim)
                    assert np.min(np.hypot(blob[:, 0] + 0.5 - x, blob[:, 1] + 0.5 - y)) < 1.5
            checked += 1
    assert checked >= 8


def test_dataset_is_the_same_for_the_same_seed_and_differs_for_another(tmp_path):
    a = shapes.build_dataset(tmp_path / "a", "detect", n_train=3, n_val=1, seed=0).parent
    b = shapes.build_dataset(tmp_path / "b", "detect", n_train=3, n_val=1, seed=0).parent
    c = shapes.build_dataset(tmp_path / "c", "detect", n_train=3, n_val=1, seed=1).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "data.yaml")
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


@pytest.mark.parametrize("task", shapes.TASKS)
def test_test_frames_have_the_promised_sizes_and_come_from_held_out_photos(task):
    frames = shapes.test_frames(task)
    assert {n: f.image.shape for n, f in frames.items()} == {
        "portrait": (540, 360, 3), "landscape": (400, 640, 3), "small": (120, 180, 3), "1080p": (1080, 1920, 3)}
    assert all(f.image.dtype == np.uint8 and 2 <= len(f.shapes) <= 4 for f in frames.values())
    again = shapes.test_frames(task)
    assert all(np.array_equal(frames[n].image, again[n].image) for n in frames)
    assert not set(shapes.HELDOUT_PHOTOS) & set(shapes.TRAIN_PHOTOS)


def test_importing_the_module_loads_neither_torch_nor_ultralytics():
    import subprocess
    import sys

    code = "import sys, tests.material.shapes; print('torch' in sys.modules or 'ultralytics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "False"


# --- trained here (slow: minutes on a 2-core CPU the first time, then from the cache) ---------------------

@pytest.fixture(scope="session")
def trained() -> dict[str, Path]:
    return {t: shapes.train(t) for t in shapes.TARGETS}


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory) -> dict[tuple[str, str], Path]:
    out = {}
    for target, weights in trained.items():
        for variant, path in shapes.export(weights, tmp_path_factory.mktemp(target), imgsz=320).items():
            out[target, variant] = path
    return out


@pytest.mark.slow
def test_training_a_second_time_returns_the_cached_file_at_once(trained):
    for target, path in trained.items():
        mtime = path.stat().st_mtime_ns
        start = time.perf_counter()
        again = shapes.train(target)
        assert again == path and time.perf_counter() - start < 1.0
        assert path.stat().st_mtime_ns == mtime
        record = shapes.training_record(path)
        assert record["metrics"]["mAP50(B)"] > 0.7, record


EXPORTS = [("detect", "raw"), ("detect", "raw-dynamic"), ("detect", "nms"), ("detect-nmsfree", "nmsfree"),
           ("detect-nmsfree", "nmsfree-dynamic"), ("detect-nmsfree", "raw"), ("pose", "raw"),
           ("pose", "raw-dynamic"), ("pose", "nms"), ("obb", "raw"), ("obb", "raw-dynamic"), ("obb", "nms"),
           ("segment", "raw"), ("segment", "raw-dynamic"), ("segment", "nms")]


@pytest.mark.slow
@pytest.mark.parametrize("target, variant", EXPORTS)
def test_exported_files_carry_ultralytics_metadata_for_their_form(exported, target, variant):
    info = shapes.describe_onnx(exported[target, variant])
    meta = info["metadata"]
    task = shapes.TARGETS[target][0]
    assert meta["task"] == task and meta["imgsz"] == [320, 320] and meta["stride"] == 32
    assert meta["names"] == dict(enumerate(shapes.CLASSES))
    assert meta["end2end"] == variant.startswith("nmsfree")
    assert meta["args"].get("dynamic", False) == variant.endswith("dynamic")
    assert bool(meta["args"].get("nms")) == (variant == "nms")
    if task == "pose":
        assert meta["kpt_shape"] == [3, 3]
    (_, in_shape), = info["inputs"]
    assert in_shape[1] == 3 and (isinstance(in_shape[2], str) if variant.endswith("dynamic") else in_shape[2:] == [320, 320])
    import onnxruntime as ort

    # segment: a second output, the mask prototypes (B, 32, imgsz / 4, imgsz / 4)
    assert [name for name, _ in info["outputs"]] == (["output0", "output1"] if task == "segment" else ["output0"])
    declared = info["outputs"][0][1]
    assert all(isinstance(d, str) for d in (declared[0], declared[-1])) == variant.endswith("dynamic")
    sess = ort.InferenceSession(str(exported[target, variant]), providers=["CPUExecutionProvider"])
    out, *protos = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 320, 320), np.float32)})
    if task == "segment":
        assert [p.shape for p in protos] == [(1, 32, 80, 80)]
    extra = {"detect": 0, "pose": 9, "obb": 1, "segment": 32}[task]
    if variant in ("nms", "nmsfree", "nmsfree-dynamic"):  # (B, max_det, x1 y1 x2 y2 score class [extra])
        assert out.shape == (1, 300, 6 + extra)
    else:  # (B, 4 + nc + extra, anchors) at strides 8, 16, 32
        assert out.shape == (1, 4 + len(shapes.CLASSES) + extra, 40 * 40 + 20 * 20 + 10 * 10)


def _match(frame, boxes, cls, conf, min_conf=0.5):
    """Shapes found: each drawn shape matched to a detection with its class, its centre within a quarter of
    its size, and confidence >= min_conf."""
    keep = conf >= min_conf
    boxes, cls, conf = boxes[keep], cls[keep], conf[keep]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    found = 0
    for sh in frame.shapes:
        d = np.hypot(centres[:, 0] - sh.cx, centres[:, 1] - sh.cy) if len(centres) else np.array([])
        hit = np.flatnonzero((d < sh.size / 4) & (cls == sh.cls))
        found += len(hit) > 0
    return found, len(boxes)


@pytest.mark.slow
@pytest.mark.parametrize("target, variant", EXPORTS)
def test_ultralytics_predictor_on_the_exported_file_finds_the_drawn_shapes(exported, target, variant):
    from ultralytics import YOLO

    task = shapes.TARGETS[target][0]
    model = YOLO(str(exported[target, variant]), task=task)
    right, total, found_all = 0, 0, 0
    frames = shapes.test_frames(task)
    # The one-to-one head of YOLO26 after 20 CPU epochs is less sure of itself (0.4-0.9) than the one-to-many
    # heads; it is held to finding the shapes at Ultralytics' default threshold, not to the count.
    nmsfree = variant.startswith("nmsfree")
    for frame in frames.values():
        r = model.predict(frame.image, imgsz=320, verbose=False)[0]
        res = r.obb if task == "obb" else r.boxes
        found, n = _match(frame, res.xyxy.numpy(), res.cls.numpy().astype(int), res.conf.numpy(),
                          min_conf=0.25 if nmsfree else 0.5)
        right += found == len(frame.shapes) == n
        found_all += found
        total += len(frame.shapes)
        if task == "pose" and len(r.boxes):
            assert r.keypoints.data.shape[1:] == (3, 3)
        if task == "segment":
            assert r.masks is not None and len(r.masks) == len(r.boxes)
    # Bars from what CPU training gives here (2026-11-26, Ultralytics 8.4.190): detect and pose find 12-13 of
    # 13 / 10 of 11 shapes and get count and classes right on 3-4 of the 4 frames; obb (rotated squares and
    # circles alike after 20 epochs) and the YOLO26 model find 9-10 of 13, count right on 1-3 frames. segment
    # (15 epochs from the detector) finds 10 of 10, count right on 3 frames (two false shapes on the 1080p one).
    min_right, min_found = {"detect": (3, 0.85), "pose": (3, 0.85), "segment": (3, 0.85)}.get(target, (1, 0.65))
    assert nmsfree or right >= min_right, (right, found_all, total)
    assert found_all >= min_found * total, (right, found_all, total)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [v for t, v in EXPORTS if t == "segment"])
def test_ultralytics_predictor_on_the_exported_segment_file_masks_the_drawn_pixels(exported, variant):
    from ultralytics import YOLO

    model = YOLO(str(exported["segment", variant]), task="segment")
    ious = []
    for frame in shapes.test_frames("segment").values():
        h, w = frame.image.shape[:2]
        r = model.predict(frame.image, imgsz=320, retina_masks=True, verbose=False)[0]
        keep = r.boxes.conf.numpy() >= 0.5
        masks = r.masks.data.numpy()[keep] > 0.5 if r.masks is not None else np.zeros((0, h, w), bool)
        assert masks.shape[1:] == (h, w)
        cls = r.boxes.cls.numpy().astype(int)[keep]
        for sh in frame.shapes:
            truth = shapes.draw(np.zeros((h, w, 3), np.uint8), [Shape(sh.cls, sh.cx, sh.cy, sh.size, sh.angle,
                                                                      (255, 255, 255))])[..., 0] > 0
            # the best mask of the shape's class: a missed shape counts as IoU 0
            ious.append(max([_iou(m, truth) for m, c in zip(masks, cls) if c == sh.cls], default=0.0))
    ious = np.array(ious)
    # Bars from what CPU training gives here (2026-11-26, Ultralytics 8.4.190): mask IoU 0.74-0.98 on the 10
    # shapes, median 0.94, in every variant; masks at the frame's own resolution (retina masks: prototypes
    # upsampled from 80 x 80, 2-24 frame px each).
    assert (ious > 0.7).mean() >= 0.8, ious.round(2)
    assert np.median(ious) > 0.8, ious.round(2)
