"""Turning what a caller hands us (an array, a path, encoded bytes) into the image the training loader saw."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from edgeinfer.errors import ImageError
from edgeinfer.pipeline.headers import image_header
from edgeinfer.pipeline.ops import MAX_SIDE, pil_luma
from edgeinfer.spec import Decode

ImageInput = Union[np.ndarray, str, os.PathLike, bytes, bytearray, memoryview]
COLOR_ORDERS = ("bgr", "rgb")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
MAX_ENCODED_BYTES = 256 * 1024 * 1024
# Pillow's DecompressionBombWarning threshold (Image.MAX_IMAGE_PIXELS, half its error threshold): an image of
# more pixels is refused from its header before a byte is decoded. A 20000 x 20000 PNG of 1.2 MB would
# otherwise take 1.2 GB to decode. EDGEINFER_MAX_PIXELS overrides it for a process and its workers.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def max_pixels() -> int:
    """The pixel cap every decode applies: ``$EDGEINFER_MAX_PIXELS`` if set, else :data:`MAX_PIXELS`."""
    value = os.environ.get("EDGEINFER_MAX_PIXELS")
    if value is None:
        return MAX_PIXELS
    try:
        cap = int(value)
    except ValueError:
        cap = 0
    if cap <= 0:
        raise ImageError(f"EDGEINFER_MAX_PIXELS: expected a positive number of pixels, found {value!r}.")
    return cap


def check_size(data: bytes | bytearray | memoryview, *, source: str = "bytes") -> tuple[str, int, int]:
    """``(format, width, height)`` from the header, refusing an image over :func:`max_pixels` or
    :data:`~edgeinfer.pipeline.ops.MAX_SIDE` before anything is decoded."""
    raw = data if isinstance(data, (bytes, bytearray)) else memoryview(data).tobytes()  # a memoryview, an array
    fmt, w, h = image_header(raw, source=source)
    cap = max_pixels()
    if w * h > cap or max(w, h) > MAX_SIDE:
        raise ImageError(f"{source}: expected an image of at most {cap:,} pixels with sides up to {MAX_SIDE}, found "
                         f"a {fmt} header declaring {w} x {h} ({w * h:,} pixels); refused before decoding (a "
                         "decompression bomb costs its decoded size in memory). Downscale the file, or raise the "
                         "cap with EDGEINFER_MAX_PIXELS if such images are expected.")
    return fmt, w, h


def decode(data: bytes | bytearray | memoryview, *, exif_orientation: bool, source: str = "bytes",
           loader: str = "pil", color: str = "rgb") -> np.ndarray:
    """Decode an encoded image to a BGR uint8 array with the pixels the spec's loader produced (alpha dropped).

    ``loader`` (spec ``decode.loader``) names the training loader: "pil" (``PIL.Image.open(f).convert('RGB')``,
    torchvision's default loader), "keras" (``keras.utils.load_img``: the same, but in grayscale mode it keeps
    16- and 32-bit images unscaled) or "opencv" (``cv2.imread``). OpenCV decodes every file; where PIL's
    ``convert`` gives other pixels than OpenCV's 8-bit conversion, the file is decoded at its own depth and
    converted by PIL's rules (see :func:`_file_kind`); what neither reproduces is refused by name.
    """
    if len(data) == 0:
        raise ImageError(f"{source}: expected encoded image bytes (JPEG, PNG, ...), found 0 bytes.")
    if len(data) > MAX_ENCODED_BYTES:
        raise ImageError(f"{source}: expected at most {MAX_ENCODED_BYTES} bytes, found {len(data)}.")
    orient = 0 if exif_orientation else cv2.IMREAD_IGNORE_ORIENTATION
    buf = np.frombuffer(data, dtype=np.uint8)
    # The common files (8-bit JPEG, PNG, WebP, BMP) cost one look at the header: OpenCV's 8-bit BGR is PIL's.
    kind = "opencv" if loader == "opencv" else _file_kind(buf, source)
    check_size(data, source=source)  # before a pixel is decoded: a small file may declare a huge image
    if kind == "opencv":
        return _imdecode(buf, cv2.IMREAD_COLOR | orient, source)
    if kind == "gif":
        return _decode_gif(buf, source)
    if kind == "tiff" and _tiff_has_alpha(buf):
        # OpenCV reads 8-bit RGBA TIFF through libtiff's TIFFRGBAImage, which premultiplies the colours by
        # alpha; PIL keeps them. Only an opaque alpha channel leaves them equal.
        img = _imdecode(buf, cv2.IMREAD_UNCHANGED, source)
        if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 4:
            if img[..., 3].min() < 255:
                raise ImageError(f"{source}: a TIFF with a (partly) transparent alpha channel: OpenCV multiplies "
                                 "its colours by alpha, PIL's convert('RGB') keeps them, so the pixels would "
                                 f"differ. {_CONVERT_FIX}")
            return np.ascontiguousarray(img[..., :3])
    # 16-bit grayscale PNG, TIFF, PNM: decoded at their own depth, then converted as PIL's convert() does
    img = _imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | orient, source)
    return _pil_convert(img, kind, source, loader=loader, color=color)


def _imdecode(buf: np.ndarray, flags: int, source: str) -> np.ndarray:
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        raise ImageError(f"{source}: expected a decodable image, OpenCV failed ({exc}).") from exc
    if img is None or img.size == 0:
        raise ImageError(f"{source}: expected a decodable image (JPEG, PNG, BMP, TIFF, WebP, GIF), found data "
                         "OpenCV cannot decode. Check that the file is complete and is an image.")
    return img


_CONVERT_FIX = ("Convert the files to 8-bit RGB PNG the way training saw them (PIL.Image.open(f).convert('RGB')"
                ".save(...)), or record the loader that produced them.")


def _file_kind(buf: np.ndarray, source: str) -> str:
    """How to decode ``buf`` so the pixels are PIL's: "opencv" (OpenCV's 8-bit BGR is already PIL's
    ``convert('RGB')``), "png16" (16-bit grayscale PNG), "tiff", "pnm", "gif"; other formats are refused by
    name."""
    head = buf[:32].tobytes()
    if head[:3] == b"\xff\xd8\xff":
        # Baseline, progressive, any chroma subsampling, grayscale: the same libjpeg-turbo output as PIL's.
        # CMYK (Adobe, inverted, as PIL assumes): OpenCV's CMYK->RGB rounds differently, within 1 level.
        return "opencv"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        # IHDR's bit depth (byte 24) and colour type (25). PIL reads 16-bit colour by its high byte, as
        # libpng's strip_16 does for OpenCV; 16-bit grayscale is PIL mode I;16, which convert() clips at 255.
        return "png16" if len(head) >= 26 and head[24] == 16 and head[25] == 0 else "opencv"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM" or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "opencv"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n":
        return "pnm"  # 8-bit as OpenCV reads it; 16-bit (maxval > 255) is PIL's I;16, as in a TIFF
    name = _format_name(head)
    raise ImageError(f"{source}: expected a JPEG, PNG, GIF, WebP, TIFF, BMP or PNM file, whose decoding edgeinfer "
                     f"reproduces exactly as PIL's Image.open(f).convert('RGB'), found {name}. {_CONVERT_FIX}")


def _tiff_has_alpha(buf: np.ndarray) -> bool:
    """Whether the first IFD of a TIFF has an ExtraSamples tag (338): an alpha channel beside the colours."""
    data = buf.tobytes()
    order = "little" if data[:2] == b"II" else "big"
    offset = int.from_bytes(data[4:8], order)
    if offset + 2 > len(data):
        return False
    n = int.from_bytes(data[offset:offset + 2], order)
    for i in range(min(n, 4096)):
        entry = offset + 2 + 12 * i
        if entry + 2 > len(data):
            break
        if int.from_bytes(data[entry:entry + 2], order) == 338:
            return True
    return False


def _format_name(head: bytes) -> str:
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace")
        return {"avif": "an AVIF file", "avis": "an AVIF file"}.get(brand, f"an ISO media file ('{brand}': HEIF/AVIF)")
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51":
        return "a JPEG 2000 file"
    if head[:4] == b"\x76\x2f\x31\x01":
        return "an OpenEXR file"
    if head[:2] in (b"#?",):
        return "a Radiance HDR file"
    if head[:2] in (b"PF", b"Pf"):
        return "a PFM (float) file"
    if head[:4] == b"\x59\xa6\x6a\x95":
        return "a Sun raster file"
    return f"an unknown format (first bytes {head[:8].hex(' ')})"


def _pil_convert(img: np.ndarray, kind: str, source: str, *, loader: str, color: str) -> np.ndarray:
    """BGR uint8 from an image decoded at its own depth, by the rules of PIL's ``convert('RGB')`` (Convert.c)."""
    k = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype == np.uint8:
        # 8-bit TIFF and PNM (RGB, palette, 1-bit, grayscale, CMYK): OpenCV's BGR is PIL's RGB
        return img if k == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR if k == 1 else cv2.COLOR_BGRA2BGR)
    if img.dtype == np.uint16 and k in (3, 4):
        # 16-bit colour: PIL's unpackers (RGB;16L/B, RGBA;16L/B) keep each sample's high byte
        return np.right_shift(img[..., :3], 8).astype(np.uint8)
    if k == 1 and img.dtype in (np.uint16, np.int32, np.float32):
        what = {np.dtype(np.uint16): "16-bit (PIL mode I;16)", np.dtype(np.int32): "32-bit integer (PIL mode I)",
                np.dtype(np.float32): "32-bit float (PIL mode F)"}[img.dtype]
        if loader == "keras" and color == "l" and img.dtype != np.float32:
            raise ImageError(f"{source}: a {what} grayscale image; keras.utils.load_img(color_mode='grayscale') "
                             "keeps such images unscaled (values above 255), which an 8-bit pipeline cannot "
                             f"reproduce. {_CONVERT_FIX}")
        # I;16 -> L/RGB and I -> L/RGB clip to 0..255 (I16_RGB, i2rgb: not scaled); F -> L truncates (f2l)
        gray = np.clip(img, 0, 255).astype(np.uint8)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    raise ImageError(f"{source}: a {kind.upper()} image of {k} channel(s) of {img.dtype}, which edgeinfer does not "
                     f"convert the way PIL does. {_CONVERT_FIX}")


def _decode_gif(buf: np.ndarray, source: str) -> np.ndarray:
    """The first frame of a GIF as PIL's ``convert('RGB')`` gives it: transparent pixels keep the colour of
    the transparent palette index (OpenCV puts another colour under alpha 0)."""
    info = _gif_first_frame(buf.tobytes(), source)
    try:
        img = _imdecode(buf, cv2.IMREAD_COLOR if info["transparent"] is None else cv2.IMREAD_UNCHANGED, source)
    except ImageError as exc:
        raise ImageError(f"{source}: a GIF that OpenCV {cv2.__version__} does not decode (OpenCV reads GIF from "
                         f"4.11 on). Upgrade OpenCV, or convert the files to PNG. ({exc})") from exc
    if info["transparent"] is None:
        return img
    if img.ndim != 3 or img.shape[2] != 4:
        return img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    out = np.ascontiguousarray(img[..., :3])
    out[img[..., 3] == 0] = info["transparent"][::-1]
    return out


def _gif_first_frame(data: bytes, source: str) -> dict:
    """The first frame's transparent colour (RGB, or None) from the GIF's blocks; refuse frames that do not
    cover the canvas (PIL fills the rest with the transparent index, OpenCV does not)."""
    def bad(what: str) -> ImageError:
        return ImageError(f"{source}: a GIF {what}. {_CONVERT_FIX}")

    if len(data) < 13:
        raise bad("cut short in its header")
    width, height, packed = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little"), data[10]
    pos = 13
    table = None
    if packed & 0x80:
        n = 3 << ((packed & 7) + 1)
        table, pos = data[pos:pos + n], pos + n
    trns = None
    while pos < len(data):
        block = data[pos]
        if block == 0x21 and pos + 1 < len(data):  # extension: the graphic control one holds transparency
            label, pos = data[pos + 1], pos + 2
            first = True
            while pos < len(data) and data[pos] != 0:
                size = data[pos]
                if label == 0xF9 and first and size >= 4 and pos + 4 < len(data):
                    trns = data[pos + 4] if data[pos + 1] & 1 else None
                first = False
                pos += size + 1
            pos += 1
        elif block == 0x2C:  # the first image descriptor
            if pos + 10 > len(data):
                raise bad("cut short in its first frame")
            left, top = int.from_bytes(data[pos + 1:pos + 3], "little"), int.from_bytes(data[pos + 3:pos + 5], "little")
            w, h = int.from_bytes(data[pos + 5:pos + 7], "little"), int.from_bytes(data[pos + 7:pos + 9], "little")
            flags = data[pos + 9]
            if flags & 0x80:
                n = 3 << ((flags & 7) + 1)
                table = data[pos + 10:pos + 10 + n]
            if (left, top, w, h) != (0, 0, width, height):
                raise bad(f"whose first frame covers {w}x{h} at ({left}, {top}) of its {width}x{height} canvas")
            if trns is None:
                return {"transparent": None}
            if table is None:
                raise bad("with transparency but no colour table")
            rgb = table[3 * trns:3 * trns + 3]
            return {"transparent": tuple(rgb) if len(rgb) == 3 else (0, 0, 0)}
        else:
            break
    raise bad("without an image frame")


def read(path: str | os.PathLike, *, exif_orientation: bool, loader: str = "pil", color: str = "rgb") -> np.ndarray:
    """Read and decode an image file to BGR uint8 (see :func:`decode`)."""
    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{p}: expected an image file, found a directory.")
    try:
        size = p.stat().st_size
        if size > MAX_ENCODED_BYTES:
            raise ImageError(f"{p}: expected at most {MAX_ENCODED_BYTES} bytes, found {size}.")
        data = p.read_bytes()
    except OSError as exc:
        raise ImageError(f"{p}: expected a readable image file, found {exc.strerror or exc}.") from exc
    return decode(data, exif_orientation=exif_orientation, source=str(p), loader=loader, color=color)


def loader_options(decode_spec: Decode) -> dict:
    """The keyword arguments of :func:`read` and :func:`decode` that reproduce ``decode_spec``'s loader:
    ``read(path, **loader_options(model.spec.decode))``."""
    return dict(exif_orientation=decode_spec.exif_orientation, loader=decode_spec.loader, color=decode_spec.color)


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def to_model_color(image: ImageInput, decode_spec: Decode, *, color: str = "bgr") -> np.ndarray:
    """Return an H x W x C uint8 array in the mode the training loader produced ("rgb" or "l").

    Arrays are H x W (grayscale), H x W x 1, H x W x 3 in ``color`` order, or H x W x 4 (alpha dropped,
    as PIL's ``convert('RGB')`` does). Paths and bytes are decoded with the spec's EXIF semantics.
    """
    pixels, channels = to_model_layout(image, decode_spec, color=color)
    return select_channels(pixels, channels)


def to_model_layout(image: ImageInput, decode_spec: Decode, *,
                    color: str = "bgr") -> tuple[np.ndarray, tuple[int, ...]]:
    """Return the image as it lies in memory and which of its channels, in order, make the model's colours.

    The pixels come back without a copy: an H x W x K uint8 array whose rows are contiguous (a BGR
    frame, a BGRA array, a grayscale plane as H x W x 1), with ``channels`` naming the K-channel indices
    that form the RGB (or "l") image, e.g. ``(2, 1, 0)`` for BGR and ``(0, 0, 0)`` for a grayscale frame
    fed to an RGB model. Channel-independent work (resizing, cropping) runs on this layout, and the
    channels are picked once the image is small; :func:`select_channels` gives the model-colour image.
    """
    if color not in COLOR_ORDERS:
        raise ImageError(f"color: expected one of {COLOR_ORDERS}, found {color!r}. OpenCV frames are 'bgr'.")
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        how = loader_options(decode_spec)
        image = read(image, **how) if isinstance(image, (str, os.PathLike)) else decode(image, **how)
        color = "bgr"
    elif not isinstance(image, np.ndarray):
        raise ImageError(f"image: expected a numpy array, a path or encoded bytes, found {type(image).__name__}. "
                         "Convert PIL images with np.asarray(img) and pass color='rgb'.")
    arr = image
    if arr.dtype != np.uint8:
        hint = (" Scale 0-1 floats with (img * 255).round().astype(np.uint8)."
                if arr.dtype.kind == "f" else " Convert it with img.astype(np.uint8) if its values are 0-255.")
        raise ImageError(f"image dtype: expected uint8, found {arr.dtype}.{hint}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"image shape: expected H x W, H x W x 1, H x W x 3 or H x W x 4, found {arr.shape}. "
                         "Pass one image (use predict_batch for several) with channels last.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"image shape: expected a non-empty image, found {arr.shape}.")
    if arr.shape[0] > MAX_SIDE or arr.shape[1] > MAX_SIDE:
        raise ImageError(f"image shape: expected sides of at most {MAX_SIDE} pixels, found {arr.shape[:2]}.")
    k = arr.shape[2]
    order: tuple[int, ...] = (0,) if k == 1 else (2, 1, 0) if color == "bgr" else (0, 1, 2)
    if k == 3 and arr.strides[2] == -1 and arr.strides[1] == 3:
        # a channel-flipped view (frame[..., ::-1]): its memory is the other colour order
        arr, order = arr[..., ::-1], tuple(2 - c for c in order)
    if arr.strides[2] != 1 or arr.strides[1] != k:
        arr = np.ascontiguousarray(arr)  # an exotic view (a column stride, a channel subset): copy once
    if decode_spec.color == "l":
        return (arr, (0,)) if k == 1 else (pil_luma(arr, order), (0,))
    return arr, (order * 3 if k == 1 else order)


def select_channels(pixels: np.ndarray, channels: tuple[int, ...]) -> np.ndarray:
    """``pixels[..., channels]`` as a compact array, with OpenCV's colour conversions where they apply."""
    k = pixels.shape[2]
    if channels == tuple(range(k)):
        return pixels
    if pixels.dtype in (np.uint8, np.float32) and (k, channels) in _CV_SELECT and pixels.strides[2] == pixels.itemsize:
        return cv2.cvtColor(pixels, _CV_SELECT[(k, channels)]).reshape(*pixels.shape[:2], len(channels))
    return np.ascontiguousarray(pixels[..., list(channels)])


_CV_SELECT = {(3, (2, 1, 0)): cv2.COLOR_BGR2RGB, (4, (2, 1, 0)): cv2.COLOR_BGRA2RGB,
              (4, (0, 1, 2)): cv2.COLOR_BGRA2BGR, (1, (0, 0, 0)): cv2.COLOR_GRAY2RGB}
