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


def test_readme_tables_are_copied_from_the_record(record):
    from tests.arm64.suite import table

    text = table(record, record["cpus"])
    assert text in (REPO / "benchmarks" / "README.md").read_text()


def test_native_machine_is_not_reported_as_emulated(monkeypatch):
    # the positive case is in the record (measured inside the arm64 root); here the kernel and the
    # process share an architecture, so nothing but the marker may say "emulated"
    from edgeinfer.tools.bench import emulation

    monkeypatch.delenv("EDGEINFER_EMULATOR", raising=False)
    assert emulation() is None
    monkeypatch.setenv("EDGEINFER_EMULATOR", "qemu-user:cortex-a76")
    assert emulation() == "EDGEINFER_EMULATOR=qemu-user:cortex-a76"
