"""The size of an encoded image read from its header, without decoding a pixel: what lets every path that
decodes refuse a decompression bomb (a small file that declares a huge image) before any allocation."""

from __future__ import annotations

import struct
from typing import Callable

from edgeinfer.errors import ImageError

IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WebP", "TIFF", "PNM")


def _u16(b: bytes, i: int, order: str = ">") -> int:
    return struct.unpack_from(order + "H", b, i)[0]


def _u32(b: bytes, i: int, order: str = ">") -> int:
    return struct.unpack_from(order + "I", b, i)[0]


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return None
        m = b[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # markers without a length
            i += 2
            continue
        if m in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):  # a start-of-frame: its size
            return _u16(b, i + 7), _u16(b, i + 5)
        i += 2 + _u16(b, i + 2)
    return None


def _tiff_size(b: bytes) -> tuple[int, int] | None:
    order = "<" if b[:2] == b"II" else ">"
    ifd = _u32(b, 4, order)
    n = _u16(b, ifd, order)
    found: dict[int, int] = {}
    for k in range(n):
        e = ifd + 2 + 12 * k
        tag, kind = _u16(b, e, order), _u16(b, e + 2, order)
        if tag in (256, 257):
            found[tag] = _u16(b, e + 8, order) if kind == 3 else _u32(b, e + 8, order)
    return (found[256], found[257]) if len(found) == 2 else None


def _pnm_size(b: bytes) -> tuple[int, int] | None:
    fields: list[int] = []
    i = 2
    while len(fields) < 2 and i < min(len(b), 4096):
        c = b[i:i + 1]
        if c == b"#":  # a comment runs to the end of its line
            while i < len(b) and b[i:i + 1] not in (b"\n", b"\r"):
                i += 1
        elif c.isdigit():
            j = i
            while j < len(b) and b[j:j + 1].isdigit():
                j += 1
            fields.append(int(b[i:j]))
            i = j
            continue
        elif not c.isspace():
            return None
        i += 1
    return (fields[0], fields[1]) if len(fields) == 2 else None


def _webp_size(b: bytes) -> tuple[int, int] | None:
    chunk = b[12:16]
    if chunk == b"VP8 " and b[23:26] == b"\x9d\x01\x2a":
        return _u16(b, 26, "<") & 0x3FFF, _u16(b, 28, "<") & 0x3FFF
    if chunk == b"VP8L" and b[20] == 0x2F:
        bits = _u32(b, 21, "<")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(b[24:27], "little") + 1, int.from_bytes(b[27:30], "little") + 1
    return None


def _bmp_size(b: bytes) -> tuple[int, int] | None:
    if _u32(b, 14, "<") == 12:  # OS/2 core header: 16-bit sides
        return _u16(b, 18, "<"), _u16(b, 20, "<")
    w, h = struct.unpack_from("<ii", b, 18)
    return abs(w), abs(h)  # a negative height is a top-down bitmap


_SIGNATURES: tuple[tuple[str, Callable[[bytes], bool], Callable[[bytes], "tuple[int, int] | None"]], ...] = (
    ("JPEG", lambda b: b[:3] == b"\xff\xd8\xff", _jpeg_size),
    ("PNG", lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
     lambda b: (_u32(b, 16), _u32(b, 20)) if b[12:16] == b"IHDR" else None),  # IHDR comes first, or it is damaged
    ("GIF", lambda b: b[:6] in (b"GIF87a", b"GIF89a"), lambda b: (_u16(b, 6, "<"), _u16(b, 8, "<"))),
    ("BMP", lambda b: b[:2] == b"BM", _bmp_size),
    ("WebP", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP", _webp_size),
    ("TIFF", lambda b: b[:4] in (b"II*\x00", b"MM\x00*"), _tiff_size),
    ("PNM", lambda b: len(b) > 2 and b[:1] == b"P" and b[1:2] in b"123456" and b[2:3].isspace(), _pnm_size),
)


def image_header(data: bytes, *, source: str = "image") -> tuple[str, int, int]:
    """``(format, width, height)`` read from an encoded image's header, without decoding its pixels.

    Raises :class:`~edgeinfer.errors.ImageError` for data that is none of :data:`IMAGE_FORMATS` or whose
    header is cut short.
    """
    for name, matches, size in _SIGNATURES:
        if matches(data):
            try:
                wh = size(data)
            except (struct.error, IndexError):
                wh = None
            if wh is None or min(wh) <= 0:
                raise ImageError(f"{source}: expected a complete {name} header with the image size, found a "
                                 f"damaged or cut-off one ({len(data)} bytes). Check that the file is complete.")
            return name, int(wh[0]), int(wh[1])
    raise ImageError(f"{source}: expected an image ({', '.join(IMAGE_FORMATS)}), found {len(data)} bytes starting "
                     f"with {bytes(data[:8])!r}, which is none of them. Send the image file itself.")
