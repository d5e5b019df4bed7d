"""The recorded arm64 parity run (benchmarks/arm64_parity.json, written by ``./edge arm test``) is complete
and says what the project promises: every preprocessing family on at least two emulated cores, the
integer families at 0 levels, the C kernel built, used and equal to the numpy fallback, the trained
models and their variants measured against torch on x86, and the tables in the READMEs copied from it.

The run itself needs an arm64 root (about 15 minutes to build from nothing, more than CI's whole budget),
so CI checks the record; ``./edge arm test`` reproduces it (tests/arm64/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
RECORD = REPO / "benchmarks" / "arm64_parity.json"


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


def test_record_covers_every_preprocessing_family_on_two_cores(record):
    from tests.arm64.references import cases, torchvision_families

    expected = set(torchvision_families()) | {f"OpenCV {f}" for f in ("nearest", "bilinear", "bicubic", "area",
                                                                       "lanczos4")} | {"Ultralytics letterbox 640"}
    assert set(record["families"]) == expected
    assert len(record["cpus"]) >= 2 and {"cortex-a72", "cortex-a76"} <= set(record["cpus"])
    for name, fam in record["families"].items():
        # OpenCV families add the self-test image to the photos
        assert fam["cases"] == len(cases()) + (not name.startswith(("PIL", "torch"))), name
        assert set(fam["cpus"]) == set(record["cpus"]), name


def test_integer_families_are_bit_exact_on_arm64_and_the_c_kernel_equals_numpy(record):
    for name, fam in record["families"].items():
        for cpu, per in fam["cpus"].items():
            for mode, m in per.items():
                # float32: the fallback sums through BLAS in another order; on x86 the same 1e-4 levels apart
                assert m["c_kernel_equals_numpy"] or (name.startswith("torch float") and m["c_vs_numpy_levels"] < 1e-3), \
                    (name, cpu, mode)
                assert m["max_vs_x86_edgeinfer_levels"] < 1.001, (name, cpu, mode)  # OpenCV: 1 level at most
                if not name.startswith(("OpenCV", "Ultralytics")):
                    assert m["max_vs_x86_edgeinfer_levels"] == 0, (name, cpu, mode)
                if name.startswith(("PIL ", "torch uint8 ")) and mode == "exact":
                    assert m["max_vs_reference_levels"] == 0, (name, cpu)
                    assert m["max_vs_x86_edgeinfer_levels"] == 0, (name, cpu)
    for cpu, env in record["arm64"].items():
        assert env["machine"] == "aarch64" and env["resample_kernel"] == "c", cpu
        assert env["c_kernel_module"].endswith("aarch64-linux-gnu.so"), cpu
        assert env["emulated"] and "kernel is x86_64" in env["emulated"], cpu
    assert record["failures"] == []


def test_models_and_variants_were_measured_against_torch_on_x86(record):
    assert {"resnet18", "mobilenet_v3_small"} <= set(record["models"])
    for name, m in record["models"].items():
        assert m["images"] >= 20
        for cpu in record["cpus"]:
            r = m["cpus"][cpu]
            # float is emulated op by op: ResNet-18's fp32/fp16 on a few images, the rest on all
            assert r["int8"]["images"] == m["images"] and r["fp32"]["images"] >= 3 if name == "resnet18" else \
                all(r[k]["images"] == m["images"] for k in ("fp32", "fp16", "int8"))
            assert r["self_test"]["passed"] and r["self_test"]["max_abs_diff"] <= r["self_test"]["atol"]
            assert r["fp32"]["vs_torch_x86"]["top1_agreement"] == 1.0
            assert r["fp32"]["vs_torch_x86"]["max_abs_dp"] <= 1e-4
            for kind in ("fp16", "int8"):
                assert 0.0 <= r[kind]["vs_torch_x86"]["top1_agreement"] <= 1.0
                assert r[kind]["providers"] == ["CPUExecutionProvider"]


def test_pi5_profile_fell_back_visibly_and_tools_said_emulated(record):
    prof = record["raspberry_pi_5_profile"]
    assert "XnnpackExecutionProvider" not in prof["available_providers"]
    assert prof["requested"][0] == "XnnpackExecutionProvider" and prof["used"] == ["CPUExecutionProvider"]
    assert any("Xnnpack" in w for w in prof["warnings"]) and prof["predicts"]
    tools = record["tools"]
    assert tools["bench"]["exit_code"] == 0 and tools["bench"]["emulated"]
    assert any(line.startswith("EMULATED") for line in tools["bench"]["output"])
    assert tools["tune"]["exit_code"] == 0 and tools["tune"]["emulated"]
    assert {r["precision"] for r in tools["tune"]["rows"]} == {"fp32", "fp16", "int8"}


def _engine_packages() -> dict[str, str]:
    """arm.sh's ENGINE_PACKAGES: package name -> pinned version (the one list of what setup installs)."""
    import re

    line = re.search(r'^ENGINE_PACKAGES="([^"]+)"', (REPO / "tests" / "arm64" / "arm.sh").read_text(), re.M)
    return dict(req.split("==") for req in line.group(1).split())


def test_each_engine_package_arm_sh_installs_is_recorded_from_its_aarch64_wheel(record):
    eng = record["engines"]
    assert eng["machine"] == "aarch64" and eng["cpu"] == "cortex-a76" and "kernel is x86_64" in eng["emulated"]
    pins = _engine_packages()
    assert set(eng["wheels"]) == set(pins)
    for pkg, w in eng["wheels"].items():
        assert w["requirement"] == f"{pkg}=={pins[pkg]}"
        if w["status"] != "installed":  # said, with pip's reason; never built from source
            assert w["status"].startswith("failed") and w.get("errors"), pkg
            continue
        # the package's own wheel: binary, for aarch64, this Python
        [own] = [f for f in w["wheels"] if f["file"].split("-")[0].replace("_", "-") == pkg]
        assert own["file"].endswith("aarch64.whl") and "-cp311-" in own["file"] and own["mb"] > 1, own
        assert w["seconds"] > 0 and w["installed_mb"] >= own["mb"], pkg
        assert eng["imports"][pkg]["imported"] and eng["imports"][pkg]["version"] == pins[pkg], pkg


def test_every_installed_engine_gives_x86s_results_within_the_task_gate(record):
    from edgeinfer import engines

    eng = record["engines"]
    assert {"classifier", "detector"} <= set(eng["models"])
    installed = set(eng["arm64"]["engines_installed"])
    assert {"onnxruntime", "openvino", "ncnn"} <= installed
    for name, m in eng["models"].items():
        assert set(m["engines"]) <= set(engines.names()) and installed <= set(m["engines"]), name
        for engine in installed:
            row = m["engines"][engine]
            assert row["ran"], (name, engine, row.get("error"))
            # ncnn runs only the files convert made on x86; OpenVINO reads the IR convert wrote
            assert row["artifact"] == (engine != "onnxruntime"), (name, engine)
            for mode in ("tensor", "frame"):
                for against in ("vs_same_engine_x86", "vs_onnxruntime_x86"):
                    v = row[mode][against]
                    assert v["images"] >= 2, (name, engine, mode, against)
                    # on x86's graph input the engine alone is judged: the task's whole gate
                    assert v["passed"] or mode == "frame", (name, engine, against, v)
                    if "top1_agreement" in v:  # probabilities: <= 1e-3, the same top-1
                        assert v["max_abs_diff"] <= 1e-3 and v["top1_agreement"] == 1.0, (name, engine, mode)
                    else:  # boxes: <= 0.5 px, the same counts, some boxes to compare
                        assert v["box_max_abs_diff"] <= 0.5 and v["detections"] == v["candidate_detections"]
                        assert sum(v["detections"]) > 0
                    if not v["passed"]:  # end to end, only where the input made here differs from x86's
                        assert m["input_vs_x86"]["values_differing"] > 0, (name, engine, against)
    assert eng["failures"] == []
    # ncnn first on the Pi 5's profile, found with the files convert wrote beside the model
    assert eng["raspberry_pi_5_auto"]["engine"] == "ncnn" and not eng["raspberry_pi_5_auto"]["error"]


def test_readme_tables_are_copied_from_the_record(record):
    from tests.arm64.suite import engine_table, table

    text = table(record, record["cpus"])
    readme = (REPO / "benchmarks" / "README.md").read_text()
    assert text in readme
    assert engine_table(record["engines"]) in readme


def test_native_machine_is_not_reported_as_emulated(monkeypatch):
    # the positive case is in the record (measured inside the arm64 root); here the kernel and the
    # process share an architecture, so nothing but the marker may say "emulated"
    from edgeinfer.tools.bench import emulation

    monkeypatch.delenv("EDGEINFER_EMULATOR", raising=False)
    assert emulation() is None
    monkeypatch.setenv("EDGEINFER_EMULATOR", "qemu-user:cortex-a76")
    assert emulation() == "EDGEINFER_EMULATOR=qemu-user:cortex-a76"
