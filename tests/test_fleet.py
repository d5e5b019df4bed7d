"""The fleet comparison, from reports written by real bench, parity, check and tune runs here.

Devices: the stock ``cpu`` profile, ``raspberry-pi-5`` (its XNNPACK falls back to the CPU provider here,
with four threads) and, injected, two misconfigured ones: a Pi 5 profile switched to the approximate
``fast`` preprocessing (its parity differs) and one that loads the int8 variant while the others run fp32
(its self-test fails). Real profiles, really run; the report must name them first.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeinfer.tools import fleet
from edgeinfer.tools.bench import bench
from edgeinfer.cli import main
from edgeinfer.tools.check import check
from edgeinfer.errors import SchemaVersionError

# The two injected outliers of benchmarks/fleet: real profiles, really run (see the files' comments).
FLEET = Path(__file__).resolve().parent.parent / "benchmarks" / "fleet"
INJECTED = {"pi-5-fast-resize", "pi-5-int8"}


@pytest.fixture(scope="module")
def reports(exported, photo_files, tmp_path_factory):
    """bench, check and parity reports of three devices, and one tune report, written as the CLI writes them."""
    from converters.compare import compare
    from converters.tune import tune
    from converters.zoo import imagenet_eval_transform

    from converters.optimize import optimize

    torch_model, exported_path, _ = exported["resnet18"]
    out = tmp_path_factory.mktemp("fleet")
    images = out / "images"
    images.mkdir()
    for f in photo_files:
        shutil.copy(f, images / f.name)
    # Two frames at a camera's 1920x1080, as a Pi camera delivers them: the approximate resize departs from
    # PIL's only when it shrinks by 4x or more (its box pre-reduction), which the library's photos mostly do
    # not; on them alone the injected fault moved probabilities by < 1e-4 and went unflagged.
    for f in [f for f in photo_files if f.name in ("china.jpg", "flower.jpg")]:
        cv2.imwrite(str(images / f"{f.stem}_1080p.png"), cv2.resize(cv2.imread(str(f)), (1920, 1080),
                                                                    interpolation=cv2.INTER_CUBIC))
    onnx_path = out / "photo-classifier.onnx"
    shutil.copy(exported_path, onnx_path)
    optimize(onnx_path, out / "photo-classifier.int8.onnx", kind="int8", calibration=images, force=True)
    written = []

    def write(name, data):
        written.append(out / name)
        written[-1].write_text(json.dumps(data, indent=2))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # raspberry-pi-5: XNNPACK falls back to the CPU provider here
        for device, tag in (("cpu", "cpu"), ("raspberry-pi-5", "pi5"), (str(FLEET / "pi-5-fast-resize.toml"), "fast"),
                            (str(FLEET / "pi-5-int8.toml"), "int8")):
            write(f"{tag}.bench.json", bench(onnx_path, device=device, batches=(1, 4), images=images, runs=4,
                                             warmup=1, measure_cold_start=False).to_dict())
            write(f"{tag}.check.json", check(onnx_path, images=images, device=device).to_dict())
            write(f"{tag}.parity.json", compare(torch_model, imagenet_eval_transform(), onnx_path, images,
                                                device=device).to_dict())
        write("cpu.tune.json", tune(onnx_path, images=images, precisions=("fp32", "fp16"), threads=(1,), rounds=3,
                                    out_profile=out / "tuned.toml").to_dict())
    return written


@pytest.mark.slow  # the reports come from real bench, check, parity and tune runs (~45 s)
def test_fleet_report_shows_every_figure_and_flags_the_injected_outlier_first(reports, tmp_path):
    result = fleet.report(reports, out=tmp_path / "fleet.md", plots=tmp_path / "plots")
    md = (tmp_path / "fleet.md").read_text()
    assert len(result.devices) == 4
    # the misconfigured devices are flagged, and nothing else: the self-test failure first
    flagged = {(o.device.split(" @ ")[0], o.kind) for o in result.outliers}
    assert {d for d, _ in flagged} == INJECTED
    assert {("pi-5-fast-resize", "parity"), ("pi-5-int8", "self_test"), ("pi-5-int8", "parity")} <= flagged
    assert result.outliers[0].kind == "self_test"
    outliers_at, first_table = md.index("## Outliers"), md.index("## Latency")
    assert all(d in md[outliers_at:first_table] for d in INJECTED)
    for path in reports:
        data = json.loads(path.read_text())
        label = fleet.device_label(data)
        assert label in md
        if data["schema"] == "edgeinfer.bench/1":
            for b in data["batches"]:
                for key in ("p50", "p90", "p99", "mean", "std", "min", "max"):
                    assert f"{b['latency_ms'][key]:.2f}" in md, (path.name, key)
                assert f"{b['throughput_ips']:.1f}" in md
            assert data["environment"]["onnxruntime"] in md and data["environment"]["cpu_model"] in md
        elif data["schema"] == "edgeinfer.parity/1":
            for c in data["candidates"]:
                for key in ("max_abs_diff", "mean_abs_diff", "max_abs_diff_raw"):
                    assert f"{c[key]:.2e}" in md, (path.name, c["name"], key)
                assert f"{c['top1_agreement']:.1%}" in md and f"{c['top5_agreement']:.1%}" in md
        elif data["schema"] == "edgeinfer.check/1":
            assert f"{data['measured']['self_test_max_abs_diff']:.2e}" in md
        else:
            chosen = data["chosen"]
            assert f"| {label} | `{Path(data['model']).name}` | **chosen** | {chosen['engine']} " \
                   f"{chosen['engine_version']} | {chosen['precision']} | {chosen['provider']} | {chosen['threads']} | " \
                   f"{chosen['median_ms']:.2f} | max_abs_diff {chosen['gate']['max_abs_diff']:.3g}" in md
    check_rows = {r["device"].split(" @ ")[0]: r for r in result.checks}
    assert check_rows["cpu"]["self_test_passed"] and check_rows["raspberry-pi-5"]["self_test_passed"]
    assert check_rows["pi-5-int8"]["self_test_passed"] is False and "**fails**" in md


@pytest.mark.slow  # the reports come from real bench, check, parity and tune runs (~45 s)
def test_fleet_plots_are_real_pictures(reports, tmp_path):
    fleet.report(reports, out=tmp_path / "fleet.md", plots=tmp_path / "plots")
    md = (tmp_path / "fleet.md").read_text()
    for name in ("fleet_latency.png", "fleet_agreement.png"):
        img = cv2.imread(str(tmp_path / "plots" / name))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 600, name
        # drawn on: many distinct colours, not a blank canvas; the outlier's red bars among them
        assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50, name
        assert f"(plots/{name})" in md
    red = cv2.imread(str(tmp_path / "plots" / "fleet_agreement.png"))
    tab_red = np.array([40, 39, 214])  # matplotlib's tab:red in BGR
    assert (np.abs(red.astype(int) - tab_red).sum(axis=2) < 30).sum() > 100


@pytest.mark.slow  # the reports come from real bench, check, parity and tune runs (~45 s)
def test_fleet_refuses_reports_of_other_schema_versions_by_name(reports, tmp_path):
    newer = tmp_path / "newer.bench.json"
    data = json.loads(reports[0].read_text())
    newer.write_text(json.dumps({**data, "schema": "edgeinfer.bench/2"}))
    refused = r"newer\.bench\.json: schema 'edgeinfer\.bench/2'.*edgeinfer\.bench/1"
    with pytest.raises(SchemaVersionError, match=refused):
        fleet.compare([*reports, newer])
    unversioned = tmp_path / "old.json"
    unversioned.write_text(json.dumps({k: v for k, v in data.items() if k != "schema"}))
    with pytest.raises(SchemaVersionError, match=r"old\.json: expected a report with a 'schema' field"):
        fleet.compare([unversioned])


@pytest.mark.slow  # the reports come from real bench, check, parity and tune runs (~45 s)
def test_cli_fleet_report_writes_the_comparison_and_names_the_outlier(reports, tmp_path, capsys):
    assert main(["fleet", "report", *map(str, reports), "--out", str(tmp_path / "fleet.md"),
                 "--plots", str(tmp_path / "plots")]) == 0
    err = capsys.readouterr().err
    assert "outlier: pi-5-int8" in err and "outlier: pi-5-fast-resize" in err
    assert (tmp_path / "plots" / "fleet_latency.png").is_file()
    assert main(["fleet", "report", str(tmp_path / "fleet.md")]) == 2  # not a report: refused, not guessed
    assert "SchemaVersionError" in capsys.readouterr().err


def test_importing_the_runtime_with_its_distributed_and_fleet_modules_loads_no_ray_nor_matplotlib():
    import subprocess
    import sys

    code = ("import sys, edgeinfer, edgeinfer.tools.distributed, edgeinfer.tools.fleet, edgeinfer.tools.reports; "
            "print(sorted(m for m in ('ray', 'pyarrow', 'pandas', 'matplotlib', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fleet_still_reads_a_tune_report_of_schema_1_as_onnx_runtime_rows():
    old = FLEET / "cpu.tune.json"  # recorded by benchmarks/fleet/run.py before tune searched engines
    data = json.loads(old.read_text())
    assert data["schema"] == "edgeinfer.tune/1"
    result = fleet.compare([old])
    assert len(result.tuning) == len(data["rows"]) and {r["engine"] for r in result.tuning} == {"onnxruntime"}
    (chosen,) = [r for r in result.tuning if r["chosen"]]
    assert (chosen["precision"], chosen["threads"]) == (data["chosen"]["precision"], data["chosen"]["threads"])
    assert chosen["gate"] == {"top1_agreement": data["chosen"]["top1_agreement"],
                              "max_abs_diff": data["chosen"]["max_abs_diff"], "min_agreement": data["min_agreement"]}
    assert f"| **chosen** | onnxruntime {data['environment']['onnxruntime']} | {chosen['precision']} |" in \
        result.to_markdown()
