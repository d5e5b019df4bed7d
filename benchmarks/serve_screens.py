"""Screenshots of `edgeinfer serve`'s page for the README, taken in Debian's Chromium through Playwright.

The committed shape detector (tests/data/detectors/shapes, exported here by Ultralytics' exporter) serves a
video written here from its held-out test frames (shapes drawn on real photos); a photo is then dropped on
the page's drop-zone. Writes benchmarks/serve_screens/*.png.

    .venv/bin/python benchmarks/serve_screens.py
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

# the test material (tests/material) is imported from the checkout: a script's own folder is on sys.path, not the root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUT = Path(__file__).with_name("serve_screens")
REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("EDGEINFER_CACHE", str(REPO / "tests" / "data" / "detectors"))
    from playwright.sync_api import sync_playwright

    from tests.material import shapes

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = shapes.export(shapes.train("detect"), tmp, variants=["raw"])["raw"]
        frames = shapes.test_frames("detect")
        video = tmp / "shapes.mp4"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 360))
        for name in ("landscape", "1080p"):
            base = cv2.resize(frames[name].image, (640, 360), interpolation=cv2.INTER_AREA)
            for i in range(40):
                writer.write(np.ascontiguousarray(np.roll(base, 2 * i, axis=1)))
        writer.release()
        dropped = tmp / "portrait.png"
        cv2.imwrite(str(dropped), frames["portrait"].image)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "edgeinfer", "serve", str(model), "--source", str(video),
                                   "--port", str(port), "--log-level", "warning"])
        try:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"))
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("document.getElementById('live').naturalWidth > 0", timeout=120_000)
                time.sleep(4)
                page.screenshot(path=str(OUT / "live.png"))
                page.set_input_files("#file", str(dropped))
                page.wait_for_function("document.getElementById('drop-result').textContent.startsWith('portrait')",
                                       timeout=120_000)
                time.sleep(1)
                page.screenshot(path=str(OUT / "dropped_photo.png"))
                browser.close()
        finally:
            server.terminate()
            server.wait(60)
    for p in sorted(OUT.glob("*.png")):
        print(f"wrote {p.relative_to(REPO)} ({p.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
