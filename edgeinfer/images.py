"""Turning what a caller hands us (an array, a path, encoded bytes) into the image the training loader saw."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from edgeinfer.errors import ImageError
from edgeinfer.ops import MAX_SIDE, pil_luma
from edgeinfer.spec import Decode

ImageInput = Union[np.ndarray, str, os.PathLike, bytes, bytearray, memoryview]
COLOR_ORDERS = ("bgr", "rgb")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
MAX_ENCODED_BYTES = 256 * 1024 * 1024


def decode(data: bytes | bytearray | memoryview, *, exif_orientation: bool, source: str = "bytes") -> np.ndarray:
    """Decode an encoded image to a BGR uint8 array the way the spec's loader did (alpha dropped)."""
    if len(data) == 0:
        raise ImageError(f"{source}: expected encoded image bytes (JPEG, PNG, ...), found 0 bytes.")
    if len(data) > MAX_ENCODED_BYTES:
        raise ImageError(f"{source}: expected at most {MAX_ENCODED_BYTES} bytes, found {len(data)}.")
    flags = cv2.IMREAD_COLOR
    if not exif_orientation:
        # PIL's Image.open (what torchvision loaders use) ignores the EXIF orientation tag.
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        raise ImageError(f"{source}: expected a decodable image, OpenCV failed ({exc}).") from exc
    if img is None or img.size == 0:
        raise ImageError(f"{source}: expected a decodable image (JPEG, PNG, BMP, TIFF, WebP), found data OpenCV "
                         "cannot decode. Check that the file is complete and is an image.")
    return img


def read(path: str | os.PathLike, *, exif_orientation: bool) -> np.ndarray:
    """Read and decode an image file to BGR uint8."""
    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{p}: expected an image file, found a directory.")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageError(f"{p}: expected a readable image file, found {exc.strerror or exc}.") from exc
    return decode(data, exif_orientation=exif_orientation, source=str(p))


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
    if isinstance(image, (str, os.PathLike)):
        image, color = read(image, exif_orientation=decode_spec.exif_orientation), "bgr"
    elif isinstance(image, (bytes, bytearray, memoryview)):
        image, color = decode(image, exif_orientation=decode_spec.exif_orientation), "bgr"
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
