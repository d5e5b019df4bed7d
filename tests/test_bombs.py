"""Decompression bombs are refused from the image header, on every path that decodes, before any allocation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeinfer
from edgeinfer import ImageError
from edgeinfer.pipeline import images
from edgeinfer.tools.stream import SourceError, stream
from tests.material import bombs

MODEL = Path(__file__).with_name("data") / "keras" / "torch-801bd4ded11d.onnx"
SPEC = {"mode": "torch", "size": [72, 56]}  # the Keras-trained classifier committed with the tests


@pytest.fixture(scope="module")
def model():
    return edgeinfer.load(MODEL, spec=SPEC)


@pytest.fixture
def small_cap(monkeypatch):
    """A cap of one megapixel, so real 3000 x 2000 files of every format are bombs at little cost."""
    monkeypatch.setenv("EDGEINFER_MAX_PIXELS", "1000000")


@pytest.mark.parametrize("fmt", bombs.FORMATS)
def test_every_format_over_the_cap_is_refused_as_bytes_and_as_a_path(model, small_cap, monkeypatch, tmp_path, fmt):
    data = bombs.MAKERS[fmt](3000, 2000)
    path = tmp_path / f"big.{fmt.lower()}"
    path.write_bytes(data)
    for given in (data, path, str(path)):
        with pytest.raises(ImageError, match=rf"{fmt} header declaring 3000 x 2000 \(6,000,000 pixels\).*before decoding"):
            model.predict(given)
    # under the cap the same file decodes: the refusal is the cap, not the file
    monkeypatch.delenv("EDGEINFER_MAX_PIXELS")
    assert images.decode(data, exif_orientation=False).shape == (2000, 3000, 3)
    assert model.predict(path).label is not None


def test_the_default_cap_is_pillows_bomb_threshold_and_a_bad_setting_is_refused(monkeypatch):
    assert images.max_pixels() == images.MAX_PIXELS == 89_478_485
    monkeypatch.setenv("EDGEINFER_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="EDGEINFER_MAX_PIXELS: expected a positive number"):
        images.decode(bombs.png(8, 8), exif_orientation=False)


def test_a_folder_stream_of_a_still_bomb_and_a_class_map_are_refused(model, small_cap, tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(bombs.png(3000, 2000))
    with pytest.raises(SourceError, match="before decoding"):
        list(stream(model, str(path)))
    from edgeinfer.tasks.segmentation import Segmentation

    with pytest.raises(ImageError, match="before decoding"):
        Segmentation.read_png(path)


_CHILD = """
import json, sys
from pathlib import Path
import numpy as np
import edgeinfer
m = edgeinfer.load(sys.argv[1], spec=json.loads(sys.argv[2]))
m.predict(np.zeros((72, 56, 3), np.uint8))
data = Path(sys.argv[3]).read_bytes()
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024
base, errors = hwm(), []
for given in (data, sys.argv[3]):
    try:
        m.predict(given)
    except edgeinfer.EdgeInferError as exc:
        errors.append(type(exc).__name__)
print(json.dumps({"growth_mb": hwm() - base, "errors": errors}))
"""


@pytest.mark.parametrize("fmt", ["PNG", "BMP"])
def test_a_real_20000_pixel_bomb_costs_no_memory_under_the_default_cap(tmp_path, fmt):
    # a 20000 x 20000 file of a few hundred KB that OpenCV would decode to 1.2 GB (2.3 GB peak): refused from
    # its header in a fresh process whose peak memory is read before and after (VmHWM)
    path = tmp_path / f"bomb.{fmt.lower()}"
    path.write_bytes(bombs.bomb(fmt))
    assert path.stat().st_size < 4_000_000
    out = subprocess.run([sys.executable, "-c", _CHILD, str(MODEL), json.dumps(SPEC), str(path)],
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["errors"] == ["ImageError", "ImageError"]
    assert got["growth_mb"] < 100, got
