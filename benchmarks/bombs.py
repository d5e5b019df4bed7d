"""What a decompression bomb costs the device: peak memory and time until the typed refusal, per format.

    python benchmarks/bombs.py [--json benchmarks/bombs.json]

For each format a device decodes (PNG, JPEG, WebP, TIFF, BMP, GIF) a real bomb is made (tests/material/bombs.py:
a small file declaring 20000 x 20000, WebP 16383 x 16383, that OpenCV really decodes). Each case runs in a fresh
process: load a real model (the Keras-trained classifier committed under tests/data/keras), note the peak
resident memory, then hand the bomb to ``Model.predict`` as bytes and as a path, and to ``cv2.imdecode`` (what
the decode did before the header was read first). Printed: the growth of peak RSS over the loaded model and
the seconds until the call returned or raised.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.material import bombs  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "tests" / "data" / "keras" / "torch-801bd4ded11d.onnx"
SPEC = {"mode": "torch", "size": [72, 56]}


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that over an exec from the
    parent, which made the bombs."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (this benchmark reads Linux's figures)")


def child(route: str, file: str) -> dict:
    """One case in this process: the model loaded, then the bomb through ``route``."""
    import cv2
    import numpy as np

    import edgeinfer

    model = edgeinfer.load(MODEL, spec=SPEC)
    model.predict(np.zeros((72, 56, 3), np.uint8))
    data = Path(file).read_bytes()
    base = _peak_mb()
    t = time.perf_counter()
    try:
        if route == "bytes":
            model.predict(data)
        elif route == "path":
            model.predict(file)
        else:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            outcome = f"decoded {img.shape[1]} x {img.shape[0]}" if img is not None else "OpenCV returned None"
        if route != "cv2.imdecode":
            outcome = "accepted"
    except edgeinfer.EdgeInferError as exc:
        outcome = f"{type(exc).__name__}"
    return {"seconds": round(time.perf_counter() - t, 4), "peak_growth_mb": round(_peak_mb() - base, 1),
            "outcome": outcome}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in bombs.FORMATS:
            side = bombs.SIDES.get(fmt, 20000)
            t = time.perf_counter()
            data = bombs.bomb(fmt)
            made = time.perf_counter() - t
            path = Path(tmp) / f"bomb.{fmt.lower()}"
            path.write_bytes(data)
            row = {"format": fmt, "declared": f"{side} x {side}", "file_kb": round(len(data) / 1024, 1),
                   "made_s": round(made, 1)}
            for route in ("bytes", "path", "cv2.imdecode"):
                out = subprocess.run([sys.executable, __file__, "--child", route, str(path)], capture_output=True,
                                     text=True, check=True)
                row[route] = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{fmt:5} {row['declared']:>13} {row['file_kb']:>8.1f} KB | "
                  + " | ".join(f"{r}: +{row[r]['peak_growth_mb']:.0f} MB {row[r]['seconds']:.3f} s "
                               f"{row[r]['outcome']}" for r in ("bytes", "path", "cv2.imdecode")), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                                               "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
