"""Export behaviour (eval mode, output kind, batch axis) and the command line, on real architectures."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import converters
import edgeinfer
from converters.zoo import imagenet_eval_transform
from edgeinfer import ExportError

pytestmark = pytest.mark.slow
SMALL = imagenet_eval_transform(72, 64)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeinfer", *map(str, args)], capture_output=True, text=True)


def test_train_mode_is_switched_with_a_warning_or_refused_when_strict(tmp_path, photos):
    model = torchvision.models.resnet18(weights=None, num_classes=4).train()
    with pytest.raises(ExportError, match="train mode.*strict"):
        converters.export(model, tmp_path / "strict.onnx", transform=SMALL, strict=True)
    assert not (tmp_path / "strict.onnx").exists()
    with pytest.warns(converters.ExportWarning, match="train mode"):
        report = converters.export(model, tmp_path / "m.onnx", transform=SMALL, images=list(photos.values()))
    assert report.switched_to_eval and not model.training


def test_probability_outputs_are_not_softmaxed_twice(tmp_path, photos):
    net = torch.nn.Sequential(torchvision.models.resnet18(weights=None, num_classes=5), torch.nn.Softmax(dim=1))
    net.eval()
    report = converters.export(net, tmp_path / "p.onnx", transform=SMALL, images=list(photos.values()))
    assert report.spec.output.kind == "probabilities"
    deployed = edgeinfer.load(tmp_path / "p.onnx")
    frames = list(photos.values())
    with torch.no_grad():
        ref = net(torch.stack([SMALL(Image.fromarray(f)) for f in frames])).numpy()
    got = np.stack([p.scores for p in deployed.predict_batch(frames, color="rgb")])
    np.testing.assert_allclose(got, ref, atol=1e-5)  # a second softmax would flatten these


def test_exported_model_has_a_dynamic_batch_axis(exported, photos):
    deployed = edgeinfer.load(exported["mobilenet_v3_small"][1])
    assert deployed.session.get_inputs()[0].shape[0] not in (1, 2)
    batch = deployed.preprocessor.batch(list(photos.values()), color="rgb")
    assert deployed.run(batch).shape == (len(photos), len(photos))


def test_old_opset_and_wrong_label_count_are_refused(tmp_path):
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    with pytest.raises(ExportError, match="opset"):
        converters.export(model, tmp_path / "a.onnx", transform=SMALL, opset=11)
    with pytest.raises(ExportError, match="labels"):
        converters.export(model, tmp_path / "b.onnx", transform=SMALL, labels=["a", "b"])


def test_cli_inspect_and_predict(exported, photo_files):
    path = exported["resnet18"][1]
    out = _cli("inspect", path)
    assert out.returncode == 0, out.stderr
    assert "Resize(size=256 (shorter), interpolation=bilinear, backend=pil)" in out.stdout
    assert "torchvision: 0.29" in out.stdout or "torchvision:" in out.stdout
    spec = json.loads(_cli("inspect", path, "--json").stdout)["spec"]
    assert spec["schema"] == "edgeinfer.spec/1" and spec["labels"][0] == "astronaut"

    res = _cli("predict", path, photo_files[0], photo_files[1], "--top-k", "2", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    deployed = edgeinfer.load(path)
    assert rows[0]["top_k"] == deployed.predict(photo_files[0], top_k=2).to_dict()["top_k"]


def test_cli_reports_errors_with_a_nonzero_exit(tmp_path, exported):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    res = _cli("predict", exported["resnet18"][1], bad)
    assert res.returncode == 1 and "bad.jpg: expected a JPEG" in res.stderr
    res = _cli("inspect", tmp_path / "missing.onnx")
    assert res.returncode == 2 and "ModelError" in res.stderr


def test_cli_export_builds_a_named_architecture(tmp_path, photo_files):
    res = _cli("export", "squeezenet1_1", "--num-classes", "3", "-o", tmp_path / "sq.onnx", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["export_top1_agreement"] == 1.0 and report["deploy_max_abs_diff"] < 1e-4
    assert edgeinfer.load(tmp_path / "sq.onnx").predict(photo_files[0]).scores.shape == (3,)


def test_demo_runs_end_to_end(tmp_path):
    res = subprocess.run([sys.executable, "-m", "benchmarks.demo", "--out", tmp_path, "--epochs", "1"],
                         cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "torch imported on device side: False" in res.stdout and "top-1 agreement:        100.00%" in res.stdout


class _BatchMean(torch.nn.Module):
    """A model whose output depends on the rest of its batch even in eval mode."""

    def __init__(self):
        super().__init__()
        self.net = torchvision.models.resnet18(weights=None, num_classes=3)

    def forward(self, x):
        out = self.net(x)
        return out - out.mean(dim=0, keepdim=True)


def test_export_warns_about_batch_dependent_outputs_and_refuses_when_strict(tmp_path, photos):
    model = _BatchMean().eval()
    with pytest.raises(ExportError, match="depends on the other images in its batch"):
        converters.export(model, tmp_path / "b.onnx", transform=SMALL, images=list(photos.values()), strict=True)
    with pytest.warns(converters.ExportWarning, match="depends on the other images"):
        report = converters.export(model, tmp_path / "b.onnx", transform=SMALL, images=list(photos.values()))
    assert any("batch" in n for n in report.warnings)
    assert any("requires_grad" in n for n in report.warnings)
