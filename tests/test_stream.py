"""Camera loops, folders and test-time augmentation on real files and photos."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import edgeinfer
from edgeinfer.tasks.classification import softmax
from edgeinfer.tools.stream import SourceError, StreamStats, stream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def video(tmp_path_factory, photos):
    """A real MPEG-4 file written with OpenCV: 48 frames panning over a photo, frame index in the pixels."""
    path = tmp_path_factory.mktemp("video") / "pan.mp4"
    base = cv2.resize(photos["astronaut"][..., ::-1], (640, 360))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 360))
    for i in range(48):
        writer.write(np.ascontiguousarray(np.roll(base, i * 7, axis=1)))
    writer.release()
    return path


def test_every_frame_of_a_file_is_accounted_for_in_order(exported, video):
    model = edgeinfer.load(exported["resnet18"][1])
    stats = StreamStats()
    seen = [t.index for _, _, t in stream(model, str(video), stats=stats)]
    assert seen == list(range(48)) and stats.frames == 48 and stats.dropped == 0 and not stats.errors
    cap = cv2.VideoCapture(str(video))
    ok, first = cap.read()
    want = model.predict(first)
    got = next(iter(stream(model, str(video), max_frames=1)))[1]
    assert np.array_equal(got.scores, want.scores)  # the pipelined path predicts what predict() does
    d = stats.to_dict()
    assert d["fps"] > 0 and d["inference_ms"]["p50"] > 0


def test_frames_the_caller_keeps_are_never_overwritten_and_the_rest_are_reused(exported, video):
    model = edgeinfer.load(exported["resnet18"][1])
    cap, want = cv2.VideoCapture(str(video)), []
    while (r := cap.read())[0]:
        want.append(r[1])
    kept, preds = [], []
    for frame, pred, _ in stream(model, str(video)):
        kept.append(frame)  # held: its buffer must not be decoded into again
        preds.append(pred.scores)
    assert len(kept) == 48 and all(np.array_equal(a, b) for a, b in zip(kept, want))
    assert all(np.array_equal(p, model.predict(f).scores) for p, f in zip(preds[::8], want[::8]))
    from edgeinfer.tools.stream import _Buffers

    pool = _Buffers(keep=4)
    a = pool.get((2, 3))
    view = a[..., :1]
    assert pool.get((2, 3)) is not a  # a view of it is still held
    del view
    b = pool.get((2, 3))
    assert b is not a  # ... and so is ``a`` itself
    del a, b
    assert pool.get((2, 3)) is pool.items[0]  # nobody holds them: reused, not allocated


def test_a_live_source_that_disconnects_is_retried_reported_and_never_hangs(exported, video, tmp_path):
    live = tmp_path / "camera.mp4"
    live.write_bytes(video.read_bytes())
    model = edgeinfer.load(exported["resnet18"][1])
    stats = StreamStats()
    start = time.perf_counter()
    frames = 0
    for _ in stream(model, str(live), live=True, retries=2, backoff=0.05, stats=stats):
        if frames == 0:
            live.unlink()  # the camera goes away: the open capture drains, reopening fails
        frames += 1
    assert time.perf_counter() - start < 30
    assert frames > 0 and stats.reconnects == 2
    assert any("stopped delivering" in e for e in stats.errors) and any("gave up" in e for e in stats.errors)


def test_a_source_that_never_opens_raises(exported, tmp_path):
    model = edgeinfer.load(exported["resnet18"][1])
    with pytest.raises(SourceError, match="no frame"):
        list(stream(model, str(tmp_path / "absent.mp4"), live=True, retries=1, backoff=0.01))


def test_camera_cli_writes_annotated_video_and_jsonl(exported, video, tmp_path):
    out, jsonl = tmp_path / "a.mp4", tmp_path / "p.jsonl"
    res = subprocess.run([sys.executable, "-m", "edgeinfer", "camera", str(exported["resnet18"][1]), "--source",
                          str(video), "--out", str(out), "--jsonl", str(jsonl), "--max-frames", "20"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "20 frames" in res.stdout and "FPS" in res.stdout
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(20)) and "top_k" in lines[0]
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20


def test_folder_predict_writes_as_it_goes_and_resumes(exported, photo_files, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in photo_files[:5]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "preds.jsonl"
    cmd = [sys.executable, "-m", "edgeinfer", "predict", str(exported["resnet18"][1]), str(folder), "--out", str(out),
           "--batch", "2"]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 5
    # an interrupted run: drop the last two results and cut a line in half, then rerun
    kept = out.read_text().splitlines()[:3]
    out.write_text("\n".join(kept) + "\n" + kept[0][:10])
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert "2 predicted, 3 already" in res.stderr and "1 skipped" in res.stderr
    images = [json.loads(x)["image"] for x in out.read_text().splitlines() if x.startswith("{") and x.endswith("}")]
    assert sorted(images) == sorted(str(f) for f in folder.iterdir() if f.name != "broken.jpg")
    csv_out = tmp_path / "preds.csv"
    subprocess.run(cmd[:-4] + ["--out", str(csv_out)], capture_output=True, text=True, check=True)
    assert csv_out.read_text().splitlines()[0] == "image,index,label,score,top_k"


def test_hflip_tta_leaves_a_symmetric_input_unchanged_and_merges_correctly(exported, photos):
    model = edgeinfer.load(exported["resnet18"][1])
    half = cv2.resize(photos["coffee"], (224, 448))[:, :112]
    symmetric = np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))  # 448x224, mirror-symmetric
    x = model.preprocess(symmetric, color="rgb")
    assert np.array_equal(x, x[..., ::-1])
    plain = model.predict(symmetric, color="rgb")
    tta = model.predict(symmetric, color="rgb", tta="hflip")
    np.testing.assert_allclose(tta.scores, plain.scores, atol=1e-6)
    img = photos["chelsea"]
    xs = model.preprocessor.batch([img], color="rgb")
    logits = model.run(np.concatenate([xs, xs[..., ::-1]]))
    want_p = (softmax(logits[:1]) + softmax(logits[1:])) / 2
    want_l = softmax((logits[:1] + logits[1:]) / 2)
    np.testing.assert_allclose(model.predict(img, color="rgb", tta="hflip").scores, want_p[0], atol=1e-6)
    np.testing.assert_allclose(model.predict(img, color="rgb", tta="hflip", merge="logits").scores, want_l[0],
                               atol=1e-6)


@pytest.mark.parametrize("mode", ["five_crop", "ten_crop"])
def test_crop_tta_matches_torchvision_fivecrop_tencrop(mode, exported, photos, imagenet_transform):
    import torch
    from PIL import Image
    from torchvision import transforms as T

    model = edgeinfer.load(exported["resnet18"][1])
    img = photos["chelsea"]
    crops = (T.FiveCrop if mode == "five_crop" else T.TenCrop)(224)(T.Resize(256)(Image.fromarray(img)))
    to_input = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    batch = torch.stack([to_input(c) for c in crops]).numpy()
    want = softmax(model.run(batch)).mean(axis=0)
    got = model.predict(img, color="rgb", tta=mode).scores
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_multilabel_outputs_use_sigmoid_and_report_every_present_label(exported, photos, tmp_path):
    import onnx

    proto = onnx.load(str(exported["resnet18"][1]))
    meta = {p.key: p for p in proto.metadata_props}
    spec = json.loads(meta["edgeinfer.spec"].value)
    spec["output"]["kind"] = "multilabel_logits"
    meta["edgeinfer.spec"].value = json.dumps(spec)
    onnx.save(proto, str(tmp_path / "ml.onnx"))
    model = edgeinfer.load(tmp_path / "ml.onnx")
    img = photos["astronaut"]
    logits = model.run(model.preprocessor.batch([img], color="rgb"))[0]
    pred = model.predict(img, color="rgb")
    np.testing.assert_allclose(pred.scores, 1 / (1 + np.exp(-logits)), atol=1e-6)
    present = [i for i, _, _ in pred.present()]
    assert present == [int(i) for i in np.argsort(-logits, kind="stable") if logits[i] >= 0]
    d = pred.to_dict()
    assert "present" in d and [x["index"] for x in d["present"]] == present


def test_tta_recorded_in_the_spec_is_applied_by_default(exported, photos, imagenet_transform, tmp_path):
    import converters
    from edgeinfer.spec import TTA

    model = exported["resnet18"][0]
    path = tmp_path / "tta.onnx"
    converters.export(model, path, transform=imagenet_transform, labels=list(photos),
                      tta=TTA("multiscale", scales=(0.875, 1.0, 1.143)), images=list(photos.values()))
    deployed = edgeinfer.load(path)
    assert deployed.spec.tta.mode == "multiscale"
    img = photos["coffee"]
    views = deployed._crop_preprocessors("multiscale")
    assert [v.spec.steps[0].params["size"] for v in views] == [224, 256, 293]
    want = np.mean([softmax(deployed.run(v.batch([img], color="rgb")))[0] for v in views], axis=0)
    np.testing.assert_allclose(deployed.predict(img, color="rgb").scores, want, atol=1e-6)
    plain = deployed.predict(img, color="rgb", tta=None).scores
    np.testing.assert_allclose(plain, softmax(deployed.run(deployed.preprocess(img, color="rgb")[None]))[0], atol=1e-6)
