"""The device workflow, run by tests/test_install.py inside an installed environment (not a test module).

    python device_workflow.py MODEL IMAGES_DIR OUT_DIR [--quick]

It is started with the environment's own interpreter, from a folder outside the repository, and uses only
what that environment has: the edgeinfer an install put in site-packages, its profiles, its OpenCV. It
writes OUT_DIR/workflow.json (what it saw) and OUT_DIR/*.npy (model inputs and scores) for the test to
compare with the development checkout. Every failure raises: the test reads the exit status and stderr.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np

import edgeinfer
from edgeinfer.pipeline.preprocess import Preprocessor
from edgeinfer.providers import DEVICES_DIR, ProviderFallbackWarning, device_names
from edgeinfer.requirements import versions
from edgeinfer.spec import Spec

# The PIL filters the exact resampler implements: the C kernel and numpy must give the same pixels.
FILTERS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def cli(*args: str) -> str:
    """Run the installed ``edgeinfer`` console script; return its stdout."""
    exe = Path(sys.executable).with_name("edgeinfer")
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"edgeinfer {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def with_filter(spec: Spec, name: str) -> Spec:
    data = spec.to_dict()
    for step in data["steps"]:
        if step["op"] == "resize":
            step["interpolation"] = name
    return Spec.from_dict(data)


def main() -> None:
    model_path, images_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    quick = "--quick" in sys.argv
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
    seen: dict = {"edgeinfer_file": edgeinfer.__file__, "devices_dir": str(DEVICES_DIR),
                  "torch_importable": importlib.util.find_spec("torch") is not None,
                  "versions": versions(), "profiles": device_names()}

    model = edgeinfer.load(model_path)  # the default device, no arguments
    seen["default_providers"] = list(model.providers)
    np.save(out / "scores_files.npy", np.stack([model.predict(p).scores for p in files]))
    np.save(out / "scores_frames.npy", np.stack([model.predict(f).scores for f in frames]))
    np.save(out / "scores_batch.npy", np.stack([p.scores for p in model.predict_batch(frames)]))
    selftest = model.self_test()
    seen["self_test"] = selftest.to_dict()
    if not selftest.passed:
        raise SystemExit(f"self-test failed here: {selftest.to_dict()}")
    # Model inputs for every PIL filter, so the kernel in use (C or numpy) is compared pixel for pixel.
    for name in FILTERS:
        pre = Preprocessor(with_filter(model.spec, name))
        np.save(out / f"input_{name}.npy", np.stack([pre(f) for f in frames]))

    seen["by_profile"] = {}
    for name in device_names():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = edgeinfer.load(model_path, device=name)
            pred = m.predict(frames[0])
        seen["by_profile"][name] = {
            "providers": list(m.providers), "label": pred.label, "score": pred.score,
            "fallback_warnings": [str(w.message) for w in caught if issubclass(w.category, ProviderFallbackWarning)]}

    seen["cli_version"] = cli("--version").strip()
    seen["cli_devices"] = json.loads(cli("devices", "--json"))
    if not quick:
        seen["cli_inspect"] = json.loads(cli("inspect", str(model_path), "--json"))
        seen["cli_predict"] = json.loads(cli("predict", str(model_path), *map(str, files), "--json"))
        plots = ["--plots", str(out / "plots")] if importlib.util.find_spec("matplotlib") else []
        cli("check", str(model_path), "--images", str(images_dir), "--json", str(out / "check.json"), *plots)
        seen["check_plots"] = sorted(p.name for p in (out / "plots").glob("*.png")) if plots else []
        seen["cli_check"] = json.loads((out / "check.json").read_text())
        cli("bench", str(model_path), "--runs", "5", "--warmup", "1", "--no-cold-start",
            "--images", str(images_dir), "--json", str(out / "bench.json"))
        seen["cli_bench"] = json.loads((out / "bench.json").read_text())
        rpi = json.loads(cli("predict", str(model_path), str(files[0]), "--device", "raspberry-pi-5", "--json"))
        seen["cli_predict_rpi"] = rpi
    (out / "workflow.json").write_text(json.dumps(seen, indent=2, default=str))


if __name__ == "__main__":
    main()
