"""Device profiles as data: parsing, refusal naming the key, visible provider fallback, variants."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import edgeinfer
from edgeinfer import ModelError
from edgeinfer.errors import ProviderError
from edgeinfer.providers import DEVICES_DIR, ProviderFallbackWarning, device_names, read_profile

REQUIRED = {"cpu", "raspberry-pi-5", "jetson-orin", "nvidia-gpu", "intel-openvino", "apple-coreml"}


def test_every_shipped_profile_parses_and_names_onnxruntime_providers():
    assert REQUIRED <= set(device_names())
    for name in device_names():
        prof = read_profile(name)
        assert prof.providers[-1].name == "CPUExecutionProvider", name  # always a way to run
    jetson = read_profile("jetson-orin")
    assert [p.name for p in jetson.providers] == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                  "CPUExecutionProvider"]
    assert jetson.precision == "fp16" and jetson.providers[0].options["trt_fp16_enable"] == "True"
    assert read_profile("raspberry-pi-5").intra_op_threads == 4


@pytest.mark.parametrize("text, key", [
    ('providers = [{name = "CPUExecutionProvider"}]\nthreads = 4\n', "threads"),
    ('providers = [{name = "CudaProvider"}]\n', "providers[0].name"),
    ('providers = []\n', "providers"),
    ('precision = "int4"\nproviders = [{name = "CPUExecutionProvider"}]\n', "precision"),
    ('[session]\nintra_op_threads = -1\n[[providers]]\nname = "CPUExecutionProvider"\n', "session.intra_op_threads"),
    ('[session]\ngraph_optimization = "max"\n[[providers]]\nname = "CPUExecutionProvider"\n', "graph_optimization"),
    ('[[providers]]\nname = "CPUExecutionProvider"\nopts = {}\n', "opts"),
    ('providers = [', "TOML"),
])
def test_bad_profiles_are_refused_naming_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ModelError, match=key.replace("[", r"\[").replace("]", r"\]")):
        read_profile(path)


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(ModelError, match="raspberry-pi-5"):
        read_profile("toaster")


@pytest.mark.slow
def test_gpu_profile_falls_back_visibly_or_raises_when_strict(exported):
    path = exported["resnet18"][1]
    with pytest.warns(ProviderFallbackWarning, match="CUDAExecutionProvider.*running on CPUExecutionProvider"):
        m = edgeinfer.load(path, device="nvidia-gpu")
    assert m.providers == ("CPUExecutionProvider",)
    # ONNX Runtime gives nodes to the first provider that takes them: TensorRT before CUDA, or it gets none
    assert m.requested_providers[:2] == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    with pytest.raises(ProviderError, match="strict"):
        edgeinfer.load(path, device="jetson-orin", strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CPU profile never warns
        edgeinfer.load(path, device="cpu")


@pytest.mark.slow
def test_profile_settings_reach_the_session_and_the_preferred_variant_is_loaded(exported, tmp_path):
    src = exported["resnet18"][1]
    model_path = tmp_path / "m.onnx"
    shutil.copy(src, model_path)
    shutil.copy(src, tmp_path / "m.fp16.onnx")  # stands in for a variant file: same bytes, other name
    profile = tmp_path / "box.toml"
    profile.write_text('precision = "fp16"\npreprocess = "fast"\n[session]\nintra_op_threads = 1\n'
                       'graph_optimization = "basic"\n[[providers]]\nname = "CPUExecutionProvider"\n')
    m = edgeinfer.load(model_path, device=profile)
    assert m.path.endswith("m.fp16.onnx") and m.preprocessor.mode == "fast" and m.device == "box"
    assert m.session.get_session_options().intra_op_num_threads == 1
    assert edgeinfer.load(model_path, device=profile, preprocess="exact").preprocessor.mode == "exact"


def test_devices_cli_lists_profiles_and_availability():
    res = subprocess.run([sys.executable, "-m", "edgeinfer", "devices", "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    by_name = {r["name"]: r for r in d["devices"]}
    assert REQUIRED <= set(by_name)
    assert by_name["cpu"]["would_run_on"] == "CPUExecutionProvider"
    assert "CPUExecutionProvider" in d["available_providers"] and d["devices_dir"] == str(DEVICES_DIR)


OPENVINO_CHECK = """
import json, sys, warnings
import numpy as np
import edgeinfer
warnings.simplefilter("error")  # the intel-openvino profile must not fall back here
m = edgeinfer.load(sys.argv[1], device="intel-openvino")
scores = [m.predict(f).scores.tolist() for f in sys.argv[2:]]
import onnxruntime as ort
print(json.dumps({"providers": list(m.providers), "ort": ort.__version__, "scores": scores,
                  "self_test": m.self_test().passed}))
"""


@pytest.mark.slow
def test_intel_openvino_profile_runs_for_real_and_matches_the_cpu_provider(exported, photo_files):
    import os

    python = os.environ.get("EDGEINFER_OPENVINO_PYTHON", ".venv-openvino/bin/python")
    if not os.path.exists(python):
        pytest.skip("no onnxruntime-openvino environment (./edge test creates .venv-openvino)")
    path = exported["resnet18"][1]
    res = subprocess.run([python, "-c", OPENVINO_CHECK, str(path), *map(str, photo_files)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads(res.stdout.strip().splitlines()[-1])
    assert d["providers"][0] == "OpenVINOExecutionProvider" and d["self_test"]
    cpu = np.stack([edgeinfer.load(path).predict(f).scores for f in photo_files])
    ov = np.asarray(d["scores"])
    assert np.array_equal(cpu.argmax(1), ov.argmax(1))
    assert np.max(np.abs(cpu - ov)) < 1e-3
