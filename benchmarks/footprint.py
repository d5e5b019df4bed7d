"""Footprint of the device install next to the training stacks: installed size and import time.

    python benchmarks/footprint.py [--runs 7] [--json benchmarks/footprint.json]

Each contender is installed with pip into a fresh virtual environment of this machine's Python (no
system site-packages), the way a user would: the edgeinfer wheel built from this checkout with headless
OpenCV (the device install, runtime only), ``torch==2.14.1 torchvision==0.29.1`` (the pinned build this
project trains with), and ``ultralytics`` (which brings its own torch). Size is what the install added to
an empty venv (files under the venv, apparent size). Import time is measured inside a fresh interpreter
around the import statement alone: the first run after install, then the median of ``--runs`` more.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = (
    # name, what pip installs, the import a user's script starts with
    ("edgeinfer device install (wheel + opencv-python-headless)", ["{wheel}[opencv]"], "import edgeinfer"),
    ("torch + torchvision", ["torch==2.14.1", "torchvision==0.29.1"], "import torch, torchvision"),
    ("ultralytics", ["ultralytics"], "from ultralytics import YOLO"),
)


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def sh(cmd: list, **kw) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if done.returncode:
        raise SystemExit(f"{cmd} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def import_seconds(python: Path, statement: str, cwd: Path) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    return float(sh([python, "-c", code], cwd=cwd).strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", default=str(Path(__file__).with_name("footprint.json")))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeinfer-footprint-"))
    try:
        dist = work / "dist"
        sh([sys.executable, "-m", "build", "--wheel", "--outdir", dist, REPO], cwd=work)
        wheel = next(dist.glob("edgeinfer-*.whl"))
        empty = work / "empty"
        sh([sys.executable, "-m", "venv", empty])
        base = tree_bytes(empty)
        rows = []
        for name, packages, statement in CONTENDERS:
            venv = work / f"venv{len(rows)}"
            sh([sys.executable, "-m", "venv", venv])
            python = venv / "bin" / "python"
            t0 = time.perf_counter()
            sh([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                *[p.format(wheel=wheel) for p in packages]])
            install_s = time.perf_counter() - t0
            first = import_seconds(python, statement, work)
            times = [import_seconds(python, statement, work) for _ in range(args.runs)]
            rows.append({"contender": name, "pip_install": [p.format(wheel=wheel.name) for p in packages],
                         "import": statement, "installed_mb": round((tree_bytes(venv) - base) / 1e6, 1),
                         "import_first_s": round(first, 3), "import_median_s": round(statistics.median(times), 3),
                         "install_s": round(install_s, 1)})
            shutil.rmtree(venv)
            print(f"{name}: {rows[-1]['installed_mb']} MB, import {rows[-1]['import_median_s']} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours = rows[0]
    for r in rows:
        r["size_vs_edgeinfer"] = round(r["installed_mb"] / ours["installed_mb"], 1)
        r["import_vs_edgeinfer"] = round(r["import_median_s"] / ours["import_median_s"], 1)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "python": platform.python_version(), "runs": args.runs, "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['date']}, Python {result['python']}, {result['machine']}; import: median of {args.runs} "
          "fresh interpreters\n")
    print("| install | installed MB | vs edgeinfer | import s (median) | import s (first) | vs edgeinfer |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['contender']} | {r['installed_mb']:.1f} | {r['size_vs_edgeinfer']}x | {r['import_median_s']:.3f} "
              f"| {r['import_first_s']:.3f} | {r['import_vs_edgeinfer']}x |")


if __name__ == "__main__":
    main()
