"""Decompression bombs: small, valid image files that declare a huge image, one per format a device decodes.

Each maker returns the encoded bytes of a black ``width x height`` image that OpenCV really decodes (to
``width * height * 3`` bytes of BGR), written so that making it costs little memory where the format allows:
PNG and BMP (RLE8) are written by hand row by row; JPEG, TIFF, WebP and GIF come from their own encoders.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np

FORMATS = ("PNG", "JPEG", "WebP", "TIFF", "BMP", "GIF")
#: the sides each format's bomb declares: 20000 x 20000 (1.2 GB decoded), WebP at its largest (16383)
SIDES = {"WebP": 16383}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int) -> bytes:
    """An 8-bit grayscale PNG, deflated row by row (OpenCV's IMREAD_COLOR still makes 3 bytes a pixel)."""
    z = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the zeros
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def bmp(width: int, height: int) -> bytes:
    """An 8-bit palette BMP compressed with RLE8: runs of 255 black pixels, an end-of-line per row."""
    runs, rest = divmod(width, 255)
    line = b"\xff\x00" * runs + (bytes([rest, 0]) if rest else b"") + b"\x00\x00"
    pixels = line * height + b"\x00\x01"  # end of bitmap
    palette = bytes(4 * 256)
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def _encoded(ext: str, width: int, height: int, params: tuple = ()) -> bytes:
    ok, buf = cv2.imencode(ext, np.zeros((height, width), np.uint8), list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {width} x {height} {ext}")
    return buf.tobytes()


def gif(width: int, height: int) -> bytes:
    """A one-frame GIF from Pillow's encoder (LZW)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="GIF")
    return out.getvalue()


MAKERS = {
    "PNG": png,
    "BMP": bmp,
    "JPEG": lambda w, h: _encoded(".jpg", w, h, (cv2.IMWRITE_JPEG_QUALITY, 50)),
    "TIFF": lambda w, h: _encoded(".tiff", w, h),
    "WebP": lambda w, h: _encoded(".webp", w, h, (cv2.IMWRITE_WEBP_QUALITY, 101)),  # 101: lossless
    "GIF": gif,
}


def bomb(fmt: str, side: int | None = None) -> bytes:
    """The bomb of ``fmt`` at ``side`` x ``side`` (default: :data:`SIDES`, else 20000)."""
    side = side or SIDES.get(fmt, 20000)
    return MAKERS[fmt](side, side)
