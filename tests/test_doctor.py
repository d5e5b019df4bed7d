"""Fault injection: each deployment bug built into a healthy model or pipeline fires its finding code,
and the healthy model fires none."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
from PIL import Image

from converters.reference import check as doctor
from conftest import edit_spec
from edgeinfer.tools.check import check

pytestmark = pytest.mark.slow


def _tiny(kind):
    """A tiny graph whose fault is built in: Dropout left in training mode, or batch-mean subtraction."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["g"]), helper.make_node("Flatten", ["g"], ["f"])]
    inits = []
    if kind == "dropout":
        inits = [helper.make_tensor("ratio", TensorProto.FLOAT, [], [0.5]),
                 helper.make_tensor("train", TensorProto.BOOL, [], [True])]
        nodes.append(helper.make_node("Dropout", ["f", "ratio", "train"], ["logits"]))
    else:
        nodes += [helper.make_node("ReduceMean", ["f"], ["m"], axes=[0], keepdims=1),
                  helper.make_node("Sub", ["f", "m"], ["logits"])]
    graph = helper.make_graph(nodes, kind, [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _tiny_spec():
    from edgeinfer import InputSpec, OutputSpec, Spec, Step

    return Spec(steps=(Step("resize", {"rule": "exact", "size": [32, 32], "interpolation": "bilinear"}),
                       Step("to_float", {"scale": "div255"}),
                       Step("normalize", {"mean": [0.5] * 3, "std": [0.25] * 3})),
                input=InputSpec("input", (None, 3, 32, 32)), output=OutputSpec("logits", "logits"),
                labels=("a", "b", "c"))


def test_healthy_model_with_its_own_transform_has_no_findings_and_plots_are_written(
        exported, photo_files, imagenet_transform, tmp_path):
    model, path, _ = exported["resnet18"]
    report = doctor(path, photo_files, transform=imagenet_transform, torch_model=model, plots_dir=tmp_path / "plots")
    assert report.ok, report.to_dict()["findings"]
    assert [f.code for f in report.findings if f.severity != "info"] == []
    assert report.measured["reference_max_levels"] == 0.0 and report.measured["deployment_top1_agreement"] == 1.0
    names = sorted(p.split("/")[-1] for p in report.plots)
    assert names == ["classes.png", "confidence.png", "input_histograms.png", "parity.png", "preprocessing.png"]
    for p in report.plots:
        img = cv2.imread(p)
        assert img is not None and img.shape[0] > 200 and img.std() > 5  # a real picture, not a blank canvas
    md = report.to_markdown()
    assert "healthy" in md and "preprocessing.png" in md


def test_spec_missing_invalid_and_shape_mismatch(exported, tmp_path):
    src = exported["resnet18"][1]
    bare = onnx.load(str(src))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    assert check(tmp_path / "bare.onnx").codes() == ["spec_missing"]
    bad = edit_spec(src, tmp_path / "bad.onnx", lambda s: s["steps"].insert(0, {"op": "sharpen"}))
    assert check(bad).codes() == ["spec_invalid"]
    shape = edit_spec(src, tmp_path / "shape.onnx", lambda s: s["input"].update(shape=[None, 3, 160, 160]))
    assert check(shape).codes() == ["shape_mismatch"]


def test_selftest_failed_when_the_device_computes_differently(exported, tmp_path):
    def nudge(s):
        s["self_test"]["expected"] = [v + 0.5 for v in s["self_test"]["expected"]]
    assert "selftest_failed" in check(edit_spec(exported["resnet18"][1], tmp_path / "st.onnx", nudge)).codes()


def test_unscaled_inputs_fire_input_stats(exported, photo_files, tmp_path):
    path = edit_spec(exported["resnet18"][1], tmp_path / "u.onnx",
                      lambda s: next(x for x in s["steps"] if x["op"] == "to_float").update(scale="none"))
    assert "input_stats" in check(path, images=photo_files).codes()


def test_normalisation_differing_from_training_fires_input_stats_and_parity(exported, photo_files,
                                                                            imagenet_transform, tmp_path):
    model, src, _ = exported["resnet18"]
    path = edit_spec(src, tmp_path / "n.onnx", lambda s: s["steps"][-1].update(mean=[0.5, 0.5, 0.5]))
    codes = doctor(path, photo_files, transform=imagenet_transform, torch_model=model).codes()
    assert "input_stats" in codes and "parity" in codes and "resize_mismatch" not in codes


def test_bgr_training_loader_fires_color_order(exported, photo_files, imagenet_transform):
    bgr_loader = lambda p: Image.fromarray(cv2.imread(str(p)))  # noqa: E731  cv2 frames treated as RGB
    codes = doctor(exported["resnet18"][1], photo_files, transform=imagenet_transform, loader=bgr_loader).codes()
    assert "color_order" in codes


def test_a_different_resize_fires_resize_mismatch(exported, photo_files, imagenet_transform, tmp_path):
    path = edit_spec(exported["resnet18"][1], tmp_path / "r.onnx",
                      lambda s: s["steps"][0].update(interpolation="nearest"))
    codes = doctor(path, photo_files, transform=imagenet_transform).codes()
    assert "resize_mismatch" in codes and "color_order" not in codes


def test_collapsed_and_double_softmax_models(photo_files, photos, tmp_path):
    import torch
    import torchvision

    import converters
    from converters.zoo import imagenet_eval_transform

    tf = imagenet_eval_transform(72, 64)
    net = torchvision.models.resnet18(weights=None, num_classes=4)
    with torch.no_grad():
        net.fc.weight.zero_()  # constant output whatever the image
    net.eval()
    converters.export(net, tmp_path / "c.onnx", transform=tf, images=list(photos.values()))
    assert "collapse" in check(tmp_path / "c.onnx", images=photo_files).codes()
    soft = torch.nn.Sequential(torchvision.models.resnet18(weights=None, num_classes=4), torch.nn.Softmax(1)).eval()
    converters.export(soft, tmp_path / "s.onnx", transform=tf, images=list(photos.values()))
    wrong = edit_spec(tmp_path / "s.onnx", tmp_path / "s2.onnx", lambda s: s["output"].update(kind="logits"))
    assert "double_softmax" in check(wrong, images=photo_files).codes()
    assert "double_softmax" not in check(tmp_path / "s.onnx", images=photo_files).codes()


@pytest.mark.parametrize("kind, code", [("dropout", "train_mode"), ("batch", "batch_dependent")])
def test_train_mode_graphs_are_caught(kind, code, photo_files, tmp_path):
    from converters.attach import write_with_spec

    write_with_spec(_tiny(kind), tmp_path / "t.onnx", _tiny_spec())
    assert code in check(tmp_path / "t.onnx", images=photo_files).codes()


def test_check_cli_writes_json_report_and_plots(exported, photo_files, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in photo_files[:4]:
        (folder / f.name).write_bytes(f.read_bytes())
    res = subprocess.run([sys.executable, "-m", "edgeinfer", "check", str(exported["resnet18"][1]), "--images",
                          str(folder), "--reference-transform", "converters.zoo:IMAGENET_EVAL",
                          "--json", str(tmp_path / "c.json"), "--report", str(tmp_path / "r.md"),
                          "--plots", str(tmp_path / "p")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    d = json.loads((tmp_path / "c.json").read_text())
    assert d["schema"] == "edgeinfer.check/1" and d["ok"]
    assert "preprocessing.png" in (tmp_path / "r.md").read_text() and (tmp_path / "p" / "preprocessing.png").is_file()


def test_check_runs_the_model_on_the_engine_it_is_given(exported, photo_files, tmp_path):
    """``check --engine``: the checklist runs the graph on that engine, as the device would, and the report says
    which; the findings of a healthy model are the same as on ONNX Runtime."""
    pytest.importorskip("openvino")  # the [openvino] extra; ./edge test installs it
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in photo_files[:3]:
        (folder / f.name).write_bytes(f.read_bytes())
    model = str(exported["resnet18"][1])
    res = subprocess.run([sys.executable, "-m", "edgeinfer", "check", model, "--images", str(folder), "--engine",
                          "openvino", "--json", str(tmp_path / "c.json")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    d = json.loads((tmp_path / "c.json").read_text())
    assert d["environment"]["engine"] == "openvino" and d["ok"]
    assert [f["code"] for f in d["findings"]] == check(model, images=folder).codes()
