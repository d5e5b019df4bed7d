"""edgeinfer installed the way a device installs it: a built wheel in a fresh environment without torch.

Every other test runs from the editable checkout, where the repository's own folders are on the path;
these build the sdist and the wheel from a clean copy of the checkout, install them into new virtual
environments outside the repository, and run the device workflow there (tests/device_workflow.py). They
cover the OpenCV a device already has (pip's headless or GUI build, Debian's python3-opencv) and a
build from the sdist with no C compiler (the numpy resampler, same pixels).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeinfer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = Path(__file__).with_name("device_workflow.py")
PROFILES = sorted(p.stem for p in (REPO / "devices").glob("*.toml"))
# Debian's interpreter with python3-opencv and python3-venv from apt (./edge test installs both).
DEBIAN_PYTHON = Path("/usr/bin/python3")


def run(cmd: list, *, cwd: Path, env: dict | None = None, timeout: int = 900) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def clean_env(**extra: str) -> dict:
    """The environment of a fresh shell: nothing of the checkout or of the test's venv leaks in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EDGEINFER_DEVICES", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update(extra)
    return env


def make_venv(where: Path, *, python: Path | str = sys.executable, system_site: bool = False) -> Path:
    args = [python, "-m", "venv", where] + (["--system-site-packages"] if system_site else [])
    run(args, cwd=where.parent, env=clean_env())
    return where / "bin" / "python"


def pip(python: Path, *args, env: dict | None = None) -> str:
    return run([python, "-m", "pip", "--disable-pip-version-check", "-q", *args], cwd=python.parent.parent,
               env=env or clean_env())


def pip_opencv(python: Path) -> list[str]:
    """The pip distributions in an environment that install cv2."""
    listed = json.loads(run([python, "-m", "pip", "list", "--format", "json"], cwd=python.parent, env=clean_env()))
    return sorted(d["name"].lower() for d in listed if d["name"].lower().startswith("opencv"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel, built from a clean copy of the checkout (tracked and new files only)."""
    src = tmp_path_factory.mktemp("checkout") / "edgeinfer"
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    dist = src.parent / "dist"
    run([sys.executable, "-m", "build", "--outdir", dist, src], cwd=src, env=clean_env())
    return {"sdist": next(dist.glob("*.tar.gz")), "wheel": next(dist.glob("*.whl"))}


@pytest.fixture(scope="module")
def device_files(tmp_path_factory, exported, photo_files) -> dict[str, Path]:
    """A model and a folder of photos in a place that has nothing to do with the repository."""
    root = tmp_path_factory.mktemp("device")
    (root / "photos").mkdir()
    for f in photo_files[:4]:
        shutil.copy2(f, root / "photos" / f.name)
    model = root / "model.onnx"
    shutil.copy2(exported["mobilenet_v3_small"][1], model)
    return {"root": root, "model": model, "photos": root / "photos"}


def workflow(python: Path, files: dict[str, Path], out: Path, *, quick: bool) -> dict:
    run([python, WORKFLOW, files["model"], files["photos"], out] + (["--quick"] if quick else []),
        cwd=files["root"], env=clean_env())
    return json.loads((out / "workflow.json").read_text())


@pytest.fixture(scope="module")
def reference(device_files, tmp_path_factory) -> Path:
    """The same workflow from the development checkout: the outputs every install must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    run([sys.executable, WORKFLOW, device_files["model"], device_files["photos"], out, "--quick"],
        cwd=REPO, env=clean_env(PYTHONPATH=str(REPO)))
    return out


def assert_same_outputs(out: Path, reference: Path, *, scores_atol: float = 1e-6) -> None:
    for ref in sorted(reference.glob("*.npy")):
        got = np.load(out / ref.name)
        if ref.name.startswith("input_"):
            # Model inputs: the same pixels, whichever resampling kernel and OpenCV build computed them.
            np.testing.assert_array_equal(got, np.load(ref), err_msg=ref.name)
        else:
            np.testing.assert_allclose(got, np.load(ref), rtol=0, atol=scores_atol, err_msg=ref.name)


def assert_installed_outside_repo(seen: dict, venv: Path) -> None:
    assert not seen["torch_importable"]
    for key in ("edgeinfer_file", "devices_dir"):
        path = Path(seen[key]).resolve()
        assert path.is_relative_to(venv.resolve()) and not path.is_relative_to(REPO), (key, path)
    assert seen["profiles"] == PROFILES


def test_wheel_runs_the_device_workflow_in_a_fresh_venv_without_torch(built, device_files, reference, tmp_path):
    python = make_venv(tmp_path / "venv")
    pip(python, "install", f"{built['wheel']}[opencv,plots]")
    assert pip_opencv(python) == ["opencv-python-headless"]
    seen = workflow(python, device_files, tmp_path / "out", quick=False)

    assert_installed_outside_repo(seen, tmp_path / "venv")
    assert len(PROFILES) == 6
    assert seen["default_providers"] == ["CPUExecutionProvider"] and seen["self_test"]["passed"]
    for name, got in seen["by_profile"].items():
        assert got["providers"] == ["CPUExecutionProvider"], name
        wanted_first = name != "cpu"  # every other profile prefers a provider this CPU build lacks
        assert bool(got["fallback_warnings"]) == wanted_first, (name, got["fallback_warnings"])
    assert_same_outputs(tmp_path / "out", reference)
    assert seen["versions"]["resample_kernel"] == "c"
    assert seen["versions"]["opencv_distributions"][0].startswith("opencv-python-headless==")

    assert seen["cli_version"] == f"edgeinfer {edgeinfer.__version__}"
    devices = seen["cli_devices"]
    assert [d["name"] for d in devices["devices"]] == PROFILES
    for key in ("edgeinfer", "numpy", "opencv", "onnxruntime"):
        assert devices[key] == seen["versions"][key]
    assert seen["cli_inspect"]["spec"]["labels"] == list(edgeinfer.load(device_files["model"]).labels)
    ref_scores = np.load(reference / "scores_files.npy")
    got_top1 = [r["top_k"][0]["label"] for r in seen["cli_predict"]]
    labels = edgeinfer.load(device_files["model"]).labels
    assert got_top1 == [labels[i] for i in ref_scores.argmax(axis=1)]
    assert seen["cli_predict_rpi"][0]["top_k"][0]["label"] == got_top1[0]
    assert seen["cli_check"]["ok"], seen["cli_check"]
    assert {"confidence.png", "input_histograms.png"} <= set(seen["check_plots"])
    assert seen["cli_bench"]["schema"] == "edgeinfer.bench/1"


def test_sdist_without_a_compiler_installs_the_numpy_resampler_with_the_same_pixels(built, device_files, reference,
                                                                                     tmp_path):
    wheels = tmp_path / "wheels"
    # No C compiler: the optional accelerator fails to build and the wheel is pure Python.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, built["sdist"]], cwd=tmp_path,
        env=clean_env(CC="/nonexistent/cc"))
    wheel = next(wheels.glob("edgeinfer-*.whl"))
    python = make_venv(tmp_path / "venv")
    pip(python, "install", f"{wheel}[opencv]")
    seen = workflow(python, device_files, tmp_path / "out", quick=True)
    assert_installed_outside_repo(seen, tmp_path / "venv")
    assert seen["versions"]["resample_kernel"] == "numpy"
    assert_same_outputs(tmp_path / "out", reference)


@pytest.mark.parametrize("already, extra, opencv", [
    ("opencv-python-headless", "", "opencv-python-headless"),  # servers, containers
    ("opencv-python", "", "opencv-python"),                    # desktops; what Ultralytics installs
    (None, "[opencv-gui]", "opencv-python"),                   # a fresh machine with a screen
])
def test_installing_keeps_the_opencv_a_device_already_has(already, extra, opencv, built, device_files, reference,
                                                          tmp_path):
    python = make_venv(tmp_path / "venv")
    if already:
        pip(python, "install", already)
    pip(python, "install", f"{built['wheel']}{extra}")
    assert pip_opencv(python) == [opencv]
    run([python, "-m", "pip", "check"], cwd=tmp_path, env=clean_env())
    seen = workflow(python, device_files, tmp_path / "out", quick=True)
    assert_installed_outside_repo(seen, tmp_path / "venv")
    assert seen["versions"]["opencv_distributions"][0].startswith(f"{opencv}==")
    assert_same_outputs(tmp_path / "out", reference)


def test_installing_keeps_debians_python3_opencv(built, device_files, reference, tmp_path):
    imports = DEBIAN_PYTHON.exists() and not subprocess.run([DEBIAN_PYTHON, "-c", "import cv2"],
                                                            capture_output=True).returncode
    assert imports, (f"this test needs Debian's python3-opencv for {DEBIAN_PYTHON}, which "
                     f"{'cannot import cv2' if DEBIAN_PYTHON.exists() else 'does not exist'}; "
                     "./edge test installs it (apt-get install python3-opencv python3-venv, as root)")
    python = make_venv(tmp_path / "venv", python=DEBIAN_PYTHON, system_site=True)
    pip(python, "install", built["wheel"])
    assert pip_opencv(python) == []  # nothing pip-installed over the system's cv2
    seen = workflow(python, device_files, tmp_path / "out", quick=True)
    assert_installed_outside_repo(seen, tmp_path / "venv")
    assert seen["versions"]["opencv_module"].startswith("/usr/lib/python3/dist-packages/")
    assert seen["versions"]["opencv_distributions"] == []
    assert_same_outputs(tmp_path / "out", reference, scores_atol=1e-5)


def test_without_any_opencv_import_says_which_command_installs_one(built, tmp_path):
    python = make_venv(tmp_path / "venv")
    pip(python, "install", built["wheel"])
    assert pip_opencv(python) == []
    done = subprocess.run([python, "-c", "import edgeinfer"], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("edgeinfer.errors.DependencyError: edgeinfer needs OpenCV"), last
    assert "edgeinfer[opencv]" in last and "python3-opencv" in last


def test_the_wheel_carries_no_training_code(built):
    """What a device installs holds the runtime and the workstation's converters, never the test material or
    the demos that train models (tests/material, benchmarks/)."""
    import zipfile

    names = zipfile.ZipFile(built["wheel"]).namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert not [n for n in modules if not n.startswith(("edgeinfer/", "converters/"))]
    training = [n for n in modules if any(word in zipfile.ZipFile(built["wheel"]).read(n).decode()
                                          for word in (".backward()", "optimizer.step", "opt.step()", ".train(data="))]
    assert training == []
    assert "edgeinfer/serving/serve.html" in names and "edgeinfer/tasks/detection.py" in names
