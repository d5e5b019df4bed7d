"""Parity with the original: export and deployment candidates, worst images, and a variant that drifts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from converters.compare import compare
from conftest import edit_spec

pytestmark = pytest.mark.slow


def test_compare_reports_export_and_deployment_parity_and_catches_a_drifting_variant(exported, imagenet_transform,
                                                                                     photo_files, tmp_path):
    model, path, _ = exported["resnet18"]
    drifted = tmp_path / "drifted.onnx"
    # a deployment mistake: the normalisation mean of the spec no longer matches training
    edit_spec(path, drifted, lambda s: s["steps"][-1].update(mean=[0.5, 0.5, 0.5]))
    report = compare(model, imagenet_transform, path, photo_files, variants=[drifted])
    assert report.images == len(photo_files)
    export, deploy, variant = (report.candidate(n) for n in ("export", "deployment", "variant:drifted.onnx"))
    for good in (export, deploy):
        assert good.max_abs_diff < 1e-4 and good.top1_agreement == 1.0 and good.top5_agreement == 1.0
        assert good.mean_abs_diff <= good.max_abs_diff
    assert variant.max_abs_diff > 100 * deploy.max_abs_diff
    assert variant.worst[0][1] == variant.max_abs_diff
    assert variant.worst[0][0] in {str(f) for f in photo_files}
    d = report.to_dict()
    assert d["schema"] == "edgeinfer.parity/1" and len(d["candidates"]) == 3


def test_parity_cli_walks_a_folder(exported, photo_files, tmp_path):
    import torch

    model, path, _ = exported["mobilenet_v3_small"]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in photo_files[:3]:
        (folder / f.name).write_bytes(f.read_bytes())
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "parity.json"
    res = subprocess.run([sys.executable, "-m", "edgeinfer", "parity", str(path), "--torch-model", "mobilenet_v3_small",
                          "--num-classes", str(len(model.classifier[-1].weight)), "--weights", str(weights),
                          "--images", str(folder), "--json", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "deployment" in res.stdout and "worst for export" in res.stdout
    d = json.loads(out.read_text())
    assert d["images"] == 3
    assert all(c["top1_agreement"] == 1.0 and c["max_abs_diff"] < 1e-4 for c in d["candidates"])
