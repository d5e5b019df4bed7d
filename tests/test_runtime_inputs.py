"""What callers hand the runtime: every accepted form gives the same input; every bad one a typed error."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import edgeinfer
from edgeinfer import ImageError, ModelError, SpecMissingError


@pytest.fixture(scope="module")
def model(exported):
    return edgeinfer.load(exported["resnet18"][1])


@pytest.fixture(scope="module")
def chelsea():
    from skimage import data

    return data.chelsea()


pytestmark = pytest.mark.slow  # needs the exported model fixture


def test_bgr_frame_rgb_array_path_and_bytes_give_identical_input(model, chelsea, tmp_path):
    png = tmp_path / "chelsea.png"
    Image.fromarray(chelsea).save(png)
    ref = model.preprocess(chelsea, color="rgb")
    assert np.array_equal(model.preprocess(np.ascontiguousarray(chelsea[..., ::-1])), ref)
    assert np.array_equal(model.preprocess(png), ref)
    assert np.array_equal(model.preprocess(str(png)), ref)
    assert np.array_equal(model.preprocess(png.read_bytes()), ref)


def test_jpeg_decoding_matches_the_pil_loader(model, photo_files, imagenet_transform):
    for f in [p for p in photo_files if p.suffix == ".jpg"]:
        ref = imagenet_transform(Image.open(f).convert("RGB")).numpy()
        assert np.array_equal(model.preprocess(f), ref), f.name


def test_exif_orientation_is_ignored_like_pil_image_open(model, chelsea, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90" tag; PIL's Image.open does not apply it, cv2.imread would
    path = tmp_path / "rotated.jpg"
    Image.fromarray(chelsea).save(path, exif=exif, quality=95)
    assert cv2.imread(str(path)).shape[:2] == chelsea.shape[1::-1]  # OpenCV's default applies it
    ref = model.preprocessor.spec  # the spec says the loader did not apply it
    assert ref.decode.exif_orientation is False
    expected = model.preprocess(np.asarray(Image.open(path).convert("RGB")), color="rgb")
    assert np.array_equal(model.preprocess(path), expected)


def test_grayscale_and_rgba_are_converted_like_pil_convert_rgb(model, chelsea):
    gray = np.asarray(Image.fromarray(chelsea).convert("L"))
    as_rgb = np.asarray(Image.fromarray(gray).convert("RGB"))
    assert np.array_equal(model.preprocess(gray), model.preprocess(as_rgb, color="rgb"))
    assert np.array_equal(model.preprocess(gray[..., None]), model.preprocess(as_rgb, color="rgb"))
    from skimage import data

    logo = data.logo()  # real RGBA
    assert logo.shape[2] == 4
    dropped = np.asarray(Image.fromarray(logo).convert("RGB"))
    assert np.array_equal(model.preprocess(logo, color="rgb"), model.preprocess(dropped, color="rgb"))


@pytest.mark.parametrize("bad, fragment", [
    (np.zeros((32, 32, 2), np.uint8), r"H x W x 3.*found \(32, 32, 2\)"),
    (np.zeros((32, 32, 3), np.float32), "expected uint8, found float32"),
    (np.zeros((0, 32, 3), np.uint8), "non-empty"),
    (np.zeros((2, 32, 32, 3), np.uint8), "predict_batch"),
    (b"\x89PNG\r\n\x1a\n garbage", "expected a complete PNG header"),  # refused from its header
    (b"", "0 bytes"),
    ([1, 2, 3], "numpy array, a path or encoded bytes"),
])
def test_bad_images_raise_image_error_with_the_fix(model, bad, fragment):
    with pytest.raises(ImageError, match=fragment):
        model.predict(bad)


def test_missing_file_and_directory_are_image_errors(model, tmp_path):
    with pytest.raises(ImageError, match="readable image file"):
        model.predict(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        model.predict(tmp_path)


def test_truncated_jpeg_is_reported_not_crashed(model, photo_files):
    data = next(p for p in photo_files if p.suffix == ".jpg").read_bytes()
    try:
        model.predict(data[:200])
    except ImageError as exc:  # cut inside its header: the size cannot be read, so nothing is decoded
        assert "complete JPEG header" in str(exc) or "decod" in str(exc)


def test_wrong_color_name_is_refused(model, chelsea):
    with pytest.raises(ImageError, match="bgr"):
        model.predict(chelsea, color="hsv")


def test_model_without_spec_says_how_to_attach_one(exported, tmp_path):
    import onnx

    proto = onnx.load(str(exported["resnet18"][1]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(SpecMissingError, match="converters.export.*attach_spec.*preprocessor_config.json.*Ultralytics"):
        edgeinfer.load(bare)


def test_model_whose_input_disagrees_with_its_spec_is_refused(exported, tmp_path):
    import json

    import onnx

    proto = onnx.load(str(exported["resnet18"][1]))
    meta = {p.key: p for p in proto.metadata_props}
    spec = json.loads(meta["edgeinfer.spec"].value)
    spec["input"]["shape"] = [None, 3, 160, 160]
    meta["edgeinfer.spec"].value = json.dumps(spec)
    path = tmp_path / "mismatch.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match=r"\[.*224, 224\].*\[None, 3, 160, 160\]"):
        edgeinfer.load(path)


def test_load_refuses_non_model_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="ONNX Runtime can load"):
        edgeinfer.load(junk)
    with pytest.raises(ModelError, match="nothing"):
        edgeinfer.load(tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match="device"):
        edgeinfer.load(junk, device="quantum")


def test_runtime_loads_and_predicts_without_torch(exported, photo_files):
    code = textwrap.dedent(f"""
        import sys, edgeinfer
        after_import = [m for m in ("torch", "torchvision", "timm") if m in sys.modules]
        m = edgeinfer.load({str(exported["resnet18"][1])!r})
        p = m.predict({str(photo_files[0])!r})
        assert m.self_test().passed
        print(after_import, [m for m in ("torch", "torchvision", "timm", "PIL") if m in sys.modules], p.label)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] []"), out


def test_runtime_source_imports_only_numpy_opencv_onnxruntime():
    top_level = {"numpy", "cv2", "onnxruntime", "edgeinfer", "__future__"}
    # lazily, inside the function that needs them: plots, progress bars, the CLI's export command, the
    # hand-over of detections to supervision (Detections.to_supervision), Ray and its pyarrow (distributed.py)
    lazy = top_level | {"matplotlib", "tqdm", "converters", "supervision", "ray", "pyarrow"}
    # the HTTP server's stack (the serve extra) in its own module only: `import edgeinfer` never loads it
    # (tests/test_serve.py checks that)
    extras = {"serve.py": {"anyio", "uvicorn", "starlette"}}
    stdlib = set(sys.stdlib_module_names)
    for path in Path(edgeinfer.__file__).parent.glob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import ", "from ")):
                top = s.split()[1].split(".")[0]
                ok = (top in stdlib or top in (top_level if line == s else lazy)
                      or top in extras.get(path.name, ()))
                assert ok, f"{path.name}: {s}"

