"""Optimised variants keep the spec, pass the agreement gate, and run through edgeinfer.load."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import edgeinfer
from converters.optimize import OptimizationRefused, optimize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calibration(photos, tmp_path_factory):
    """Real photos cropped as a camera would see the same scenes, as files."""
    from tests.material.photos import photo_crops

    return photo_crops(tmp_path_factory.mktemp("calib"), photos)


@pytest.mark.parametrize("kind", ["graph", "fp16", "int8"])
def test_variant_keeps_the_spec_and_agrees_with_fp32(kind, exported, calibration, photo_files, tmp_path):
    src = exported["resnet18"][1]
    out = tmp_path / f"m.{kind}.onnx"
    report = optimize(src, out, kind=kind, calibration=calibration, holdout=photo_files)
    assert report.written and out.is_file() and not report.holdout_is_calibration
    assert report.top1_agreement >= 0.99 and report.images == len(photo_files)
    variant, ref = edgeinfer.load(out), edgeinfer.load(src)
    assert variant.spec == ref.spec  # the spec travels with the variant
    got = np.stack([variant.predict(f).scores for f in photo_files])
    want = np.stack([ref.predict(f).scores for f in photo_files])
    assert np.array_equal(got.argmax(1), want.argmax(1))
    assert np.max(np.abs(got - want)) == pytest.approx(report.max_abs_diff, abs=1e-6)
    if kind != "graph":
        assert report.size_bytes < 0.6 * src.stat().st_size  # fp16 halves, int8 quarters the weights


def test_a_variant_below_the_gate_is_not_written(exported, calibration, photo_files, tmp_path):
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(OptimizationRefused, match="below the gate"):
        optimize(exported["resnet18"][1], out, kind="int8", calibration=calibration, holdout=photo_files,
                 min_agreement=1.01)
    assert not out.exists()


def test_quantize_cli_refuses_a_lossy_int8_mobilenet_unless_forced(exported, calibration, tmp_path):
    # mobilenet_v3 (hard-swish, squeeze-excite) is known to quantise badly: the gate must catch it
    out = tmp_path / "q.onnx"
    cmd = [sys.executable, "-m", "edgeinfer", "quantize", str(exported["mobilenet_v3_small"][1]),
           "--calibration", str(calibration), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2 and "below the gate" in res.stderr and not out.exists()
    res = subprocess.run(cmd + ["--force", "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["kind"] == "int8" and d["written"] and d["holdout_is_calibration"] and out.is_file()
    assert d["top1_agreement"] < 0.99


def test_tune_picks_the_fastest_configuration_that_passes_the_gate(exported, calibration, tmp_path):
    from converters.tune import tune

    src = tmp_path / "m.onnx"
    src.write_bytes(exported["resnet18"][1].read_bytes())
    report = tune(src, device="cpu", images=calibration, rounds=6, threads=(1, 2))
    assert len(report.rows) == 3 * 1 * 2  # fp32/fp16/int8 x CPU provider x 1, 2 threads
    assert [r.median_ms for r in report.rows] == sorted(r.median_ms for r in report.rows)
    assert report.chosen is not None and report.chosen.passes
    assert report.chosen == next(r for r in report.rows if r.passes)
    tuned = edgeinfer.load(src, device=report.profile_path)
    assert tuned.device == "cpu-tuned" and tuned.session.get_session_options().intra_op_num_threads == report.chosen.threads
    if report.chosen.precision != "fp32":
        assert tuned.path == report.variant_path
