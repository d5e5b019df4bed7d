"""edgeinfer bench: the figures are measured, ordered, add up, and follow the documented schema."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeinfer.tools.bench import SCHEMA, SCHEMA_DOC, STAGES, bench

pytestmark = pytest.mark.slow  # uses the exported model fixture


def _check_schema(d: dict) -> None:
    assert d["schema"] == SCHEMA
    for key in ("model", "device", "preprocess", "environment", "images", "runs", "warmup", "batches",
                "peak_rss_mb", "cold_start_s"):
        assert key in d and key in SCHEMA_DOC
    for key in ("providers_used", "providers_requested", "onnxruntime", "cpu_model", "cpu_count", "intra_op_threads"):
        assert key in d["environment"], key
    for b in d["batches"]:
        lat = b["latency_ms"]
        assert set(lat) == {"p50", "p90", "p99", "mean", "std", "min", "max"}
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert set(b["stages_ms"]) == set(STAGES)
        # the stages are the call, split: they add up to it
        assert sum(b["stages_ms"].values()) == pytest.approx(lat["mean"], rel=0.10)
        assert b["throughput_ips"] == pytest.approx(b["batch"] * 1e3 / lat["mean"], rel=1e-6)


def test_bench_reports_ordered_percentiles_and_a_stage_split_that_adds_up(exported, photo_files, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in photo_files[:4]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    result = bench(exported["mobilenet_v3_small"][1], batches=(1, 2), images=folder, runs=12, warmup=2)
    d = json.loads(result.to_json())
    _check_schema(d)
    assert d["images"]["count"] == 4 and d["images"]["skipped"][0].endswith("broken.jpg")
    assert d["environment"]["providers_used"] == ["CPUExecutionProvider"]
    cold = d["cold_start_s"]
    assert cold["total"] >= cold["import"] + cold["load"] + cold["first_prediction"] > 0
    assert d["peak_rss_mb"] > 50


def test_bench_cli_writes_json_and_plot(exported, tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    res = subprocess.run([sys.executable, "-m", "edgeinfer", "bench", str(exported["resnet18"][1]), "--batch", "1,2",
                          "--runs", "6", "--warmup", "1", "--no-cold-start", "--json", str(out), "--plot", str(png)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "p50" in res.stdout and "peak resident memory" in res.stdout
    d = json.loads(out.read_text())
    _check_schema(d)
    assert d["cold_start_s"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bench_refuses_nonsense_arguments(exported):
    with pytest.raises(ValueError, match="batch sizes"):
        bench(exported["resnet18"][1], batches=(0,), runs=1, measure_cold_start=False)


def test_bench_reports_the_cost_and_effect_of_tta(exported):
    plain = bench(exported["resnet18"][1], runs=8, warmup=1, measure_cold_start=False)
    tta = bench(exported["resnet18"][1], runs=8, warmup=1, measure_cold_start=False, tta="hflip")
    d = tta.to_dict()
    assert d["tta"]["mode"] == "hflip" and 0 <= d["tta"]["top1_changed"] <= 1
    assert d["tta"]["max_abs_score_change"] >= d["tta"]["mean_abs_score_change"] > 0
    # (the mirrored pass's cost is a timing: benchmarks print it, a shared machine cannot assert it)
    assert tta.batches[0].stages_ms["inference"] > 0 and plain.to_dict()["tta"] is None
