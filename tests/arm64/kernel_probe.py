"""Inside the arm64 root: the C kernel as gcc builds it there, with and without FP contraction, against
the numpy fallback on a real 1080p frame (the suite's bundle). Prints the vectorised loops and one JSON
line per arithmetic x build; ``./edge arm run /opt/venv/bin/python /src/edgeinfer/tests/arm64/kernel_probe.py``.

Why it exists: gcc on aarch64 fuses ``out += row * w`` into a multiply-add by default
(-ffp-contract=fast), which rounds once instead of twice; setup.py turns that off. Timings here are
emulated (qemu), shown only to compare C and numpy on the same emulator.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import platform
import subprocess
import sysconfig
import time

import numpy as np

from edgeinfer.pipeline import resample

SRC = "/src/edgeinfer/edgeinfer/pipeline/_resample.c"


def build(name: str, flags: list[str]):
    so = f"/tmp/kernel-{name}.so"
    out = subprocess.run(["gcc", "-O3", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}", *flags,
                          "-fopt-info-vec-optimized", SRC, "-o", so], capture_output=True, text=True, check=True)
    loops = [line.split("_resample.c:")[-1] for line in out.stderr.splitlines() if "vectorized" in line]
    spec = importlib.util.spec_from_file_location("_resample", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, loops


def main() -> None:
    builds = {"gcc default (-ffp-contract=fast)": [], "setup.py (-ffp-contract=off)": ["-ffp-contract=off"]}
    mods = {}
    for name, flags in builds.items():
        mods[name], loops = build(name.split()[0] + str(len(flags)), flags)
        print(json.dumps({"build": name, "vectorised_loops": loops}))
    frame = max((np.load(f) for f in glob.glob("/opt/edgeinfer-parity/preprocess/in-*.npy")), key=lambda a: a.size)
    saved = resample._native
    try:
        for kind in ("float32 (torch float)", "uint8 (PIL fixed point)"):
            if kind.startswith("float32"):
                taps, x = resample.torch_taps(frame.shape[0], 224, "bilinear", antialias=True, uint8=False), frame.astype(np.float32)
            else:
                taps, x = resample.pil_taps(frame.shape[0], 224, "bicubic"), frame
            resample._native = None
            t = time.perf_counter()
            ref = resample._apply0(x, taps)
            numpy_ms = (time.perf_counter() - t) * 1e3
            for name, mod in mods.items():
                resample._native = mod
                t = time.perf_counter()
                got = resample.apply_native(np.ascontiguousarray(x[taps.start:]), taps, 0)
                c_ms = (time.perf_counter() - t) * 1e3
                d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
                print(json.dumps({"machine": platform.machine(), "arithmetic": kind, "build": name,
                                  "frame": list(frame.shape), "max_abs_c_minus_numpy": float(d.max()),
                                  "values_differing": int(np.count_nonzero(d)), "values": int(d.size),
                                  "emulated_c_ms": round(c_ms), "emulated_numpy_ms": round(numpy_ms)}))
    finally:
        resample._native = saved


if __name__ == "__main__":
    main()
