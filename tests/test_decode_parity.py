"""Decode parity: every file kind a training loader reads gives the loader's pixels, or a typed refusal.

The files are real photos (scikit-image, scikit-learn) written by PIL (and, for the kinds PIL cannot write,
by OpenCV or a few lines of PNG) into a temporary folder, plus real files shipped as they are. The
references are the loaders themselves: torchvision's ``default_loader`` (``Image.open(f).convert('RGB')``),
PIL's ``convert('L')`` for grayscale pipelines, ``ImageOps.exif_transpose`` for loaders that rotate,
``keras.utils.load_img`` and ``cv2.imread``. ``pytest -s`` shows the table.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeinfer.errors import ImageError, SpecError
from edgeinfer.pipeline.images import _file_kind, decode, to_model_color
from edgeinfer.spec import Decode, Spec

Image = pytest.importorskip("PIL.Image")
from PIL import ImageOps  # noqa: E402


def _save(img, path: Path, fmt: str, **kw) -> Path:
    img.save(path, fmt, **kw)
    return path


def _png(path: Path, arr: np.ndarray, color_type: int, depth: int, trns: bytes | None = None) -> Path:
    """A PNG written by hand, for the kinds neither PIL nor OpenCV writes (16-bit gray+alpha, 16-bit tRNS)."""
    h, w = arr.shape[:2]
    raw = arr.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8).reshape(h, -1)
    body = b"".join(b"\0" + row.tobytes() for row in raw)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    extra = chunk(b"tRNS", trns) if trns is not None else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(body))
                     + chunk(b"IEND", b""))
    return path


def _cv2_write(path: Path, arr: np.ndarray) -> Path:
    ok, buf = cv2.imencode(path.suffix, arr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _exif(orientation: int):
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex


def _data_dirs() -> tuple[Path, Path]:
    import skimage
    import sklearn

    return Path(skimage.__file__).parent / "data", Path(sklearn.__file__).parent / "datasets" / "images"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """kind -> a file of that kind, from real photos."""
    from skimage import data

    d = tmp_path_factory.mktemp("kinds")
    sk, sl = _data_dirs()
    chelsea = data.chelsea()  # 451 x 300: an odd width, so chroma subsampling has a half block
    rgb = Image.fromarray(chelsea)
    gray = rgb.convert("L")
    rng = np.random.default_rng(0)
    alpha = rng.integers(0, 256, chelsea.shape[:2], dtype=np.uint8)
    rgba = Image.fromarray(np.dstack([chelsea, alpha]))
    palette = rgb.quantize(200)
    # 16-bit samples whose low bytes are not a copy of the high ones: truncating and rounding differ
    c16 = chelsea.astype(np.uint16) * 256 + rng.integers(0, 256, chelsea.shape, dtype=np.uint16)
    g16 = c16[..., 1]
    out = {
        "JPEG 4:2:0": _save(rgb, d / "420.jpg", "JPEG", quality=90, subsampling=2),
        "JPEG 4:2:2": _save(rgb, d / "422.jpg", "JPEG", quality=90, subsampling=1),
        "JPEG 4:4:4": _save(rgb, d / "444.jpg", "JPEG", quality=90, subsampling=0),
        "JPEG progressive": _save(rgb, d / "prog.jpg", "JPEG", quality=85, progressive=True),
        "JPEG grayscale": _save(gray, d / "gray.jpg", "JPEG", quality=90),
        "JPEG CMYK (Adobe)": _save(rgb.convert("CMYK"), d / "cmyk.jpg", "JPEG", quality=90),
        "JPEG EXIF orientation 6": _save(rgb, d / "exif6.jpg", "JPEG", quality=90, exif=_exif(6)),
        "JPEG EXIF orientation 5": _save(rgb, d / "exif5.jpg", "JPEG", quality=90, exif=_exif(5)),
        "JPEG photo file (sklearn china.jpg)": sl / "china.jpg",
        "JPEG photo file (skimage rocket.jpg)": sk / "rocket.jpg",
        "PNG RGB": _save(rgb, d / "rgb.png", "PNG"),
        "PNG RGBA": _save(rgba, d / "rgba.png", "PNG"),
        "PNG RGBA file (skimage logo.png)": sk / "logo.png",
        "PNG palette": _save(palette, d / "p.png", "PNG"),
        "PNG palette 4-bit": _save(rgb.quantize(16), d / "p4.png", "PNG", bits=4),
        "PNG palette + tRNS index": _save(palette, d / "ptrns.png", "PNG", transparency=5),
        "PNG palette + tRNS alphas": _save(palette, d / "ptrns2.png", "PNG",
                                           transparency=bytes(range(0, 256, 2))[:200]),
        "PNG RGB + tRNS colour": _save(rgb, d / "rgbtrns.png", "PNG", transparency=tuple(int(v) for v in chelsea[0, 0])),
        "PNG gray 8-bit": _save(gray, d / "g8.png", "PNG"),
        "PNG gray 8-bit + tRNS": _save(gray, d / "g8trns.png", "PNG", transparency=int(np.asarray(gray)[0, 0])),
        "PNG gray 4-bit": _save(gray.quantize(16).convert("L"), d / "g4.png", "PNG", bits=4),
        "PNG gray 16-bit": _cv2_write(d / "g16.png", g16),
        "PNG gray 16-bit, values < 256": _cv2_write(d / "g16low.png", (g16 >> 8).astype(np.uint16)),
        "PNG gray 16-bit + tRNS": _png(d / "g16trns.png", g16, 0, 16, trns=struct.pack(">H", int(g16[0, 0]))),
        "PNG RGB 16-bit": _cv2_write(d / "rgb16.png", c16[..., ::-1]),
        "PNG RGBA 16-bit": _cv2_write(d / "rgba16.png", np.dstack([c16[..., ::-1], g16])),
        "PNG LA 8-bit": _save(Image.fromarray(np.dstack([np.asarray(gray), alpha]), "LA"), d / "la.png", "PNG"),
        "PNG LA 16-bit": _png(d / "la16.png", np.dstack([g16, c16[..., 2]]), 4, 16),
        "PNG 1-bit": _save(gray.convert("1"), d / "bit.png", "PNG"),
        "PNG EXIF orientation 8": _save(rgb, d / "exif8.png", "PNG", exif=_exif(8)),
        "GIF": _save(palette, d / "p.gif", "GIF"),
        "GIF + transparency": _save(palette, d / "ptrns.gif", "GIF", transparency=5),
        "GIF animated file (skimage)": sk / "no_time_for_that_tiny.gif",
        "WebP lossy": _save(rgb, d / "lossy.webp", "WEBP", quality=80),
        "WebP lossless": _save(rgb, d / "lossless.webp", "WEBP", lossless=True),
        "WebP lossy RGBA": _save(rgba, d / "lossy_rgba.webp", "WEBP", quality=80),
        "WebP lossless RGBA": _save(rgba, d / "lossless_rgba.webp", "WEBP", lossless=True),
        "WebP EXIF orientation 3": _save(rgb, d / "exif3.webp", "WEBP", lossless=True, exif=_exif(3)),
        "TIFF RGB": _save(rgb, d / "rgb.tif", "TIFF"),
        "TIFF RGB LZW": _save(rgb, d / "lzw.tif", "TIFF", compression="tiff_lzw"),
        "TIFF RGB JPEG-compressed": _save(rgb, d / "jpeg.tif", "TIFF", compression="jpeg"),
        "TIFF RGBA, opaque": _save(rgb.convert("RGBA"), d / "rgba_opaque.tif", "TIFF"),
        "TIFF RGBA, transparent": _save(rgba, d / "rgba.tif", "TIFF"),
        "TIFF palette": _save(palette, d / "p.tif", "TIFF"),
        "TIFF CMYK": _save(rgb.convert("CMYK"), d / "cmyk.tif", "TIFF"),
        "TIFF 1-bit": _save(gray.convert("1"), d / "bit.tif", "TIFF"),
        "TIFF gray 16-bit": _cv2_write(d / "g16.tif", g16),
        "TIFF RGB 16-bit": _cv2_write(d / "rgb16.tif", c16[..., ::-1]),
        "TIFF RGBA 16-bit": _cv2_write(d / "rgba16.tif", np.dstack([c16[..., ::-1], g16])),
        "TIFF gray 32-bit int": _save(Image.fromarray(np.asarray(gray).astype(np.int32) * 3 - 100), d / "i32.tif",
                                      "TIFF"),
        "TIFF gray 32-bit float": _save(Image.fromarray(np.asarray(gray).astype(np.float32) * 1.37 - 20.3),
                                        d / "f32.tif", "TIFF"),
        "TIFF multipage file (skimage)": sk / "multipage.tif",
        "BMP RGB": _save(rgb, d / "rgb.bmp", "BMP"),
        "BMP palette": _save(palette, d / "p.bmp", "BMP"),
        "BMP gray": _save(gray, d / "g.bmp", "BMP"),
        "BMP 1-bit": _save(gray.convert("1"), d / "bit.bmp", "BMP"),
        "PPM RGB": _save(rgb, d / "rgb.ppm", "PPM"),
        "PGM gray 16-bit": _save(Image.fromarray(g16), d / "g16.pgm", "PPM"),
    }
    return out


def _pil_rgb(path: Path, *, rotate: bool = False) -> np.ndarray:
    from torchvision.datasets.folder import pil_loader  # torchvision's default loader, as it is

    if rotate:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    return np.asarray(pil_loader(str(path)))


def _pil_l(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))[..., None]


def _compare(ref: np.ndarray, path: Path, decode_spec: Decode) -> tuple[str, str]:
    """(max difference, status) of edgeinfer's decode of ``path`` against ``ref``."""
    try:
        got = to_model_color(path, decode_spec)
    except ImageError as exc:
        return "-", f"refused: {exc}"
    if got.shape != ref.shape:
        return "shape", f"shape {got.shape} != {ref.shape}"
    diff = int(np.abs(got.astype(np.int16) - ref.astype(np.int16)).max())
    return str(diff), "exact" if diff == 0 else "within 1" if diff <= 1 else "DIFFERENT"


#: The kinds whose decode is allowed to differ by one level (and why): none other may.
WITHIN_ONE = {"JPEG CMYK (Adobe)": "OpenCV's CMYK->RGB rounds 255 - (255 - c) * k / 255 its own way"}
#: The kinds refused on purpose, with a word the message must hold.
REFUSED = {"TIFF RGBA, transparent": "TIFF with a (partly) transparent alpha channel"}


@pytest.mark.filterwarnings("ignore:Palette images with Transparency:UserWarning")
def test_every_file_kind_decodes_like_the_training_loader(files, capsys):
    rows = []
    for kind, path in files.items():
        with Image.open(path) as im:
            mode = im.mode
        rotate = "EXIF" in kind
        checks = [("rgb", _pil_rgb(path), Decode()), ("l", _pil_l(path), Decode(color="l"))]
        if rotate:
            checks.append(("rgb exif", _pil_rgb(path, rotate=True), Decode(exif_orientation=True)))
        for what, ref, spec in checks:
            diff, status = _compare(ref, path, spec)
            rows.append((kind, mode, what, diff, status))
    with capsys.disabled():
        print(f"\n{'file kind':38s} {'PIL mode':8s} {'decode':9s} {'max diff':8s} status")
        for kind, mode, what, diff, status in rows:
            print(f"{kind:38s} {mode:8s} {what:9s} {diff:8s} {status[:90]}")
    bad = [r for r in rows if not (r[4] == "exact" or (r[4] == "within 1" and r[0] in WITHIN_ONE)
                                   or (r[4].startswith("refused") and r[0] in REFUSED and REFUSED[r[0]] in r[4]))]
    assert not bad, "decoded differently from the training loader:\n" + "\n".join(map(str, bad))


def test_keras_load_img_gives_the_same_pixels_as_torchvision(files):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    for kind in ("PNG palette + tRNS index", "PNG gray 16-bit", "TIFF CMYK", "GIF + transparency", "PNG LA 16-bit"):
        ref = keras.utils.img_to_array(keras.utils.load_img(str(files[kind])), dtype="uint8")
        got = to_model_color(files[kind], Decode(loader="keras"))
        assert np.array_equal(got, ref), kind


def test_keras_grayscale_of_16_bit_files_is_refused_because_load_img_keeps_them_unscaled(files):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    for kind in ("PNG gray 16-bit", "TIFF gray 16-bit", "TIFF gray 32-bit int"):
        kept = keras.utils.img_to_array(keras.utils.load_img(str(files[kind]), color_mode="grayscale"))
        assert kept.max() > 255  # what Keras trained on: not an 8-bit image
        with pytest.raises(ImageError, match="load_img.*grayscale") as err:
            to_model_color(files[kind], Decode(color="l", loader="keras"))
        assert "Convert the files" in str(err.value)
    # 8-bit files and the torchvision loader are not affected
    ref = keras.utils.img_to_array(keras.utils.load_img(str(files["PNG RGB"]), color_mode="grayscale"), dtype="uint8")
    assert np.array_equal(to_model_color(files["PNG RGB"], Decode(color="l", loader="keras")), ref)
    assert to_model_color(files["PNG gray 16-bit"], Decode(color="l")).max() == 255


def test_opencv_loader_gives_cv2_imread_pixels(files):
    for kind in ("PNG gray 16-bit", "TIFF RGB 16-bit", "GIF + transparency", "JPEG EXIF orientation 6"):
        ref = cv2.imread(str(files[kind]), cv2.IMREAD_COLOR)[..., ::-1]
        got = to_model_color(files[kind], Decode(loader="opencv", exif_orientation=True))
        assert np.array_equal(got, ref), kind
    # and that is not what PIL gives for a 16-bit grayscale file: the loader matters
    assert not np.array_equal(to_model_color(files["PNG gray 16-bit"], Decode()),
                              to_model_color(files["PNG gray 16-bit"], Decode(loader="opencv")))


def test_formats_pil_reads_differently_are_refused_by_name(tmp_path, files):
    from skimage import data

    rgb = Image.fromarray(data.astronaut()[::4, ::4].copy())
    cases = {}
    for fmt, suffix, name in (("JPEG2000", ".jp2", "JPEG 2000"), ("AVIF", ".avif", "AVIF")):
        try:
            cases[name] = _save(rgb, tmp_path / f"a{suffix}", fmt)
        except (OSError, KeyError, ValueError):  # a Pillow built without the codec: nothing to compare
            continue
    cases["OpenEXR"] = _cv2_write(tmp_path / "a.exr", np.asarray(rgb, np.float32)) if cv2.haveImageWriter(".exr") \
        else None
    # a GIF whose first frame covers part of its canvas: PIL fills the rest with the transparent index
    gif = bytearray(files["GIF + transparency"].read_bytes())
    gif[6:10] = struct.pack("<HH", 460, 310)
    cases["GIF"] = tmp_path / "partial.gif"
    cases["GIF"].write_bytes(bytes(gif))
    assert "JPEG 2000" in cases, "Pillow here writes JPEG 2000: the refusal must be tested on a real file"
    for name, path in cases.items():
        if path is None:
            continue
        with pytest.raises(ImageError, match=name) as err:
            to_model_color(path, Decode())
        assert str(path) in str(err.value) and "convert('RGB')" in str(err.value)


def test_common_files_take_opencv_8_bit_path_without_extra_work(files):
    """The kinds the fast path serves: one header look, one IMREAD_COLOR decode, nothing after."""
    fast = ("JPEG 4:2:0", "JPEG progressive", "JPEG grayscale", "PNG RGB", "PNG RGBA", "PNG palette + tRNS index",
            "PNG RGB 16-bit", "WebP lossy", "BMP RGB")
    for kind in fast:
        buf = np.frombuffer(files[kind].read_bytes(), np.uint8)
        assert _file_kind(buf, kind) == "opencv", kind
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
        assert np.array_equal(decode(buf, exif_orientation=False), cv2.imdecode(buf, flags)), kind
    for kind, slow in (("PNG gray 16-bit", "png16"), ("TIFF RGB", "tiff"), ("GIF", "gif")):
        assert _file_kind(np.frombuffer(files[kind].read_bytes(), np.uint8), kind) == slow


def test_decode_loader_field_round_trips_and_old_specs_still_load():
    assert Decode() == Decode(color="rgb", exif_orientation=False, alpha="drop", loader="pil")
    assert Decode().to_dict() == {"color": "rgb", "exif_orientation": False, "alpha": "drop"}  # as before
    assert Decode(loader="keras").to_dict()["loader"] == "keras"
    with pytest.raises(SpecError, match="decode.loader"):
        Decode(loader="tensorflow").validate()
    with pytest.raises(SpecError, match="decode.color.*opencv"):
        Decode(loader="opencv", color="l").validate()  # 'l' is PIL's convert('L'), not OpenCV's gray
    spec = {"schema": "edgeinfer.spec/1", "decode": {"color": "rgb", "exif_orientation": False, "alpha": "drop"},
            "steps": [{"op": "to_float", "scale": "div255"}],
            "input": {"name": "x", "shape": [1, 3, 8, 8], "layout": "NCHW", "dtype": "float32"},
            "output": {"name": "y", "kind": "logits"}}
    assert Spec.from_dict(spec).decode.loader == "pil"
    spec["decode"]["loader"] = "opencv"
    assert Spec.from_dict(Spec.from_dict(spec).to_dict()).decode.loader == "opencv"


def test_damaged_files_of_the_unusual_kinds_raise_image_errors_only(tmp_path):
    """The header readers (GIF blocks, TIFF directory, PNG IHDR) meet truncated and flipped bytes."""
    from skimage import data

    small = Image.fromarray(data.chelsea()[100:148, 200:264])
    g16 = (np.asarray(small.convert("L")).astype(np.uint16) * 257)
    sources = [_save(small.quantize(64), tmp_path / "t.gif", "GIF", transparency=3),
               _save(small.convert("RGBA"), tmp_path / "t.tif", "TIFF"),
               _cv2_write(tmp_path / "g16.png", g16), _cv2_write(tmp_path / "g16.tif", g16)]
    rng = np.random.default_rng(0)
    outcomes = {"decoded": 0, "refused": 0}
    for src in sources:
        good = src.read_bytes()
        for _ in range(60):
            cut = 0 if rng.random() < 0.5 else int(rng.integers(1, len(good) - 8))
            blob = bytearray(good[: len(good) - cut])
            # flips land in the headers the readers parse (first 64 bytes) or anywhere
            span = 64 if rng.random() < 0.5 else len(blob)
            for pos in rng.integers(0, min(span, len(blob)), int(rng.integers(0, 4))):
                blob[pos] = int(rng.integers(0, 256))
            try:
                img = decode(bytes(blob), exif_orientation=False, source=src.name)
                assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
                outcomes["decoded"] += 1
            except ImageError:
                outcomes["refused"] += 1
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 0, outcomes
