"""Separable resampling that reproduces, pixel for pixel, the library a model was trained with.

A resize along one axis is a set of *taps*: for each output index, the input indices it reads and the
weight of each. Each library differs only in how it computes taps and in its arithmetic, so there is one
tap builder per library semantics and one function that applies taps:

* PIL (``Image.resize``, what torchvision does on PIL images): filter support scaled by the downscale
  factor (antialias), pixel centres at ``(x + 0.5) * scale``, weights normalised per output pixel and
  rounded to 22-bit fixed point; two passes on uint8, horizontal first, the intermediate rounded to uint8.
* torch ``interpolate`` (torchvision on tensors): the same antialias construction computed in floating
  point; on uint8 input the CPU kernel rounds weights to int16 with a per-axis precision; without
  antialias, classic bilinear / bicubic (a = -0.75) with clamped borders.

Taps are cached per (input size, output size, output window), so a camera stream of constant frame size
computes them once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Callable

import cv2
import numpy as np

try:  # optional C accelerator (built by pip when a compiler is present); numpy computes the same pixels
    from edgeinfer.pipeline import _resample as _native
except ImportError:  # pragma: no cover - exercised on machines without a compiler
    _native = None


def native_kernel() -> bool:
    """True when the compiled C accelerator is in use, False when numpy computes the pixels."""
    return _native is not None


PIL_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c: 22-bit fixed point for 8-bit images


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _box(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


def _hamming(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    px = x * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        # 0.54f and 0.46f are float literals in Pillow: their float32 values are what it computes with.
        v = np.sin(px) / px * (float(np.float32(0.54)) + float(np.float32(0.46)) * np.cos(px))
    return np.where(x == 0.0, 1.0, np.where(x >= 1.0, 0.0, v))


def _cubic(a: float) -> Callable[[np.ndarray], np.ndarray]:
    def f(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        far = (((x - 5) * x + 8) * x - 4) * a
        return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))
    return f


def _sinc(x: np.ndarray) -> np.ndarray:
    px = x * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x == 0.0, 1.0, np.sin(px) / px)


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3), 0.0)


# name -> (support at scale 1, filter). PIL's and torch's antialiased kernels share these definitions.
FILTERS: dict[str, tuple[float, Callable[[np.ndarray], np.ndarray]]] = {
    "box": (0.5, _box),
    "bilinear": (1.0, _bilinear),
    "hamming": (1.0, _hamming),
    "bicubic": (2.0, _cubic(-0.5)),
    "lanczos": (3.0, _lanczos),
}


@dataclass(frozen=True, eq=False)  # identity equality: taps are cached objects, hashed by identity
class Taps:
    """How one axis is resampled: ``out[i] = sum_k weight[i, k] * in[index[i, k]]``.

    ``shift`` is the number of fixed-point fraction bits when weights are integers (uint8 arithmetic
    with rounding), or None when weights are floats applied in float32.
    """

    index: np.ndarray
    weight: np.ndarray
    shift: int | None

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    @cached_property
    def start(self) -> int:
        """The first input index these taps read."""
        return int(self.index.min())

    @cached_property
    def local(self) -> tuple[np.ndarray, np.ndarray]:
        """int32 indices relative to :attr:`start` and int32 weights, contiguous, for the C kernel."""
        return (np.ascontiguousarray(self.index - self.start, dtype=np.int32),
                np.ascontiguousarray(self.weight, dtype=np.int32 if self.shift is not None else np.float32))


def _support_taps(in_size: int, out_size: int, filt: str, lo: int, hi: int, *, antialias: bool,
                  dtype: type = np.float64, filters: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Window start and normalised float weights of the antialias construction shared by PIL and torch."""
    support0, fn = (filters or FILTERS)[filt]
    scale = dtype(in_size) / dtype(out_size)
    filterscale = max(scale, dtype(1.0)) if antialias else dtype(1.0)
    support = dtype(support0) * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    xx = np.arange(lo, hi, dtype=dtype)
    center = (xx + dtype(0.5)) * scale
    ss = dtype(1.0) / filterscale
    # C casts with (int): truncation toward zero, then clamps.
    xmin = np.maximum(np.trunc(center - support + dtype(0.5)), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + dtype(0.5)), in_size).astype(np.int64)
    count = xmax - xmin
    w = np.zeros((hi - lo, ksize), dtype=dtype)
    total = np.zeros(hi - lo, dtype=dtype)
    for k in range(ksize):
        val = fn(((xmin + k).astype(dtype) - center + dtype(0.5)) * ss).astype(dtype)
        val = np.where(k < count, val, dtype(0.0))
        w[:, k] = val
        total = total + val  # sequential, as the C loop sums: the order decides the last bit
    safe = np.where(total != 0.0, total, dtype(1.0))
    w = np.where(total[:, None] != 0.0, w / safe[:, None], w)
    return xmin, w


def _index(xmin: np.ndarray, ksize: int, in_size: int) -> np.ndarray:
    return np.minimum(xmin[:, None] + np.arange(ksize)[None, :], in_size - 1)


@lru_cache(maxsize=256)
def pil_taps(in_size: int, out_size: int, filt: str, lo: int = 0, hi: int | None = None) -> Taps:
    """Taps of Pillow's ``Image.resize`` for output indices ``lo:hi`` (all when hi is None)."""
    hi = out_size if hi is None else hi
    if filt == "nearest":
        return _pil_nearest(in_size, out_size, lo, hi)
    xmin, w = _support_taps(in_size, out_size, filt, lo, hi, antialias=True)
    one = float(1 << PIL_PRECISION_BITS)
    fixed = np.where(w < 0, np.trunc(-0.5 + w * one), np.trunc(0.5 + w * one)).astype(np.int32)
    return _frozen(Taps(_index(xmin, w.shape[1], in_size), fixed, PIL_PRECISION_BITS))


def _pil_nearest(in_size: int, out_size: int, lo: int, hi: int) -> Taps:
    # Pillow resizes NEAREST through an affine transform that walks the source coordinate by repeated
    # addition from scale/2; the running sum (not i * scale) decides the index at exact boundaries.
    scale = in_size / out_size
    steps = np.full(out_size, scale, dtype=np.float64)
    steps[0] = scale * 0.5
    pos = np.cumsum(steps)[lo:hi]
    idx = np.clip(np.floor(pos).astype(np.int64), 0, in_size - 1)
    return _frozen(Taps(idx[:, None], np.ones((hi - lo, 1), dtype=np.int32), 0))


def _torch_cubic(a: float) -> Callable[[np.ndarray], np.ndarray]:
    """torch's cubic convolution: the same polynomial as PIL's, evaluated in another order (the order
    decides the last bit of a weight, and so, rarely, a rounded int16 weight)."""
    def f(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        near = ((a + 2) * x - (a + 3)) * x * x + 1
        far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))
    return f


TORCH_AA_FILTERS = {**FILTERS, "bicubic": (2.0, _torch_cubic(-0.5))}


@lru_cache(maxsize=256)
def torch_taps(in_size: int, out_size: int, filt: str, *, antialias: bool, uint8: bool,
               lo: int = 0, hi: int | None = None) -> Taps:
    """Taps of ``torch.nn.functional.interpolate`` (align_corners=False) for output indices ``lo:hi``.

    ``uint8`` selects the CPU kernel for uint8 tensors (int16 weights, uint8 between passes); otherwise
    float weights as torch computes them for float tensors.
    """
    hi = out_size if hi is None else hi
    if filt in ("nearest", "nearest_exact"):
        # torch computes nearest indices in float32: floorf(i * scale), or floorf((i + .5) * scale).
        scale = np.float32(in_size) / np.float32(out_size)
        i = np.arange(lo, hi, dtype=np.float32)
        pos = i * scale if filt == "nearest" else (i + np.float32(0.5)) * scale
        idx = np.minimum(np.floor(pos).astype(np.int64), in_size - 1)
        if filt == "nearest" and out_size == 2 * in_size:
            idx = np.arange(lo, hi) >> 1
        return _frozen(Taps(idx[:, None], np.ones((hi - lo, 1), dtype=np.int32), 0))
    # Weights for every output: the uint8 kernel's precision depends on the largest weight of all.
    if antialias:
        # float tensors: torch computes these weights in float32; the uint8 kernel in float64
        xmin, w = _support_taps(in_size, out_size, filt, 0, out_size, antialias=True, filters=TORCH_AA_FILTERS,
                                dtype=np.float64 if uint8 else np.float32)
        index = _index(xmin, w.shape[1], in_size)
    elif uint8:
        index, w = _torch_no_antialias(in_size, out_size, filt, np.float64)
    elif filt == "bilinear":
        index, w = _torch_no_antialias(in_size, out_size, filt, np.float32)
    elif filt == "bicubic":
        xmin, w = _classic_bicubic(in_size, out_size, 0, out_size)
        index = np.clip(xmin[:, None] + np.arange(4)[None, :], 0, in_size - 1)
    else:
        xmin, w = _support_taps(in_size, out_size, filt, 0, out_size, antialias=False)
        index = _index(xmin, w.shape[1], in_size)
    index, window = index[lo:hi], w[lo:hi]
    if not uint8:
        return _frozen(Taps(index, window.astype(np.float32), None))
    # The uint8 CPU kernel stores weights as int16 with the largest precision that keeps the biggest
    # weight (over all outputs) below 2**15, rounding half away from zero.
    wmax = max(float(w.max()), 0.0)
    precision = 0
    for p in range(22):
        if int(0.5 + wmax * (1 << (p + 1))) >= (1 << 15):
            break
        precision = p + 1
    fixed = _round_away(window * (1 << precision)).astype(np.int32)
    return _frozen(Taps(index, fixed, precision))


def _torch_no_antialias(in_size: int, out_size: int, filt: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of torch's kernels without antialias: a fixed window of 2 (bilinear) or 4
    (bicubic, a = -0.75) taps whose out-of-range weights are folded onto the border pixels; computed in
    float64 for the uint8 kernel and in float32 for float tensors."""
    size = 2 if filt == "bilinear" else 4
    fn = _bilinear if filt == "bilinear" else _torch_cubic(-0.75)
    scale = dtype(in_size) / dtype(out_size)
    real = scale * (np.arange(out_size, dtype=dtype) + dtype(0.5)) - dtype(0.5)
    if size == 2:
        real = np.maximum(real, dtype(0.0))
    # guard_index_and_lambda: floorf on the value converted to float, then clamped
    index0 = np.minimum(np.floor(real.astype(np.float32)).astype(np.int64), in_size - 1)
    lam = np.clip(real - index0.astype(dtype), dtype(0.0), dtype(1.0))
    support = size // 2
    unbound_min = index0 - support + 1
    index_min = np.maximum(unbound_min, 0)
    index_size = np.clip(np.minimum(index0 + support + 1, in_size) - index_min, 0, size)
    w = np.zeros((out_size, size), dtype=dtype)
    rows = np.arange(out_size)
    slot = np.zeros(out_size, dtype=np.int64)
    for j in range(size):
        val = fn(dtype(j + 1 - support) - lam).astype(dtype)
        slot = np.where(unbound_min + j <= 0, 0, np.where(unbound_min + j >= in_size - 1, index_size - 1, slot))
        np.add.at(w, (rows, slot), val)
        slot = slot + 1
    index = np.minimum(index_min[:, None] + np.arange(size)[None, :], in_size - 1)
    return index, w


def _classic_bicubic(in_size: int, out_size: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's bicubic without antialias on float tensors: a = -0.75, indices clamped at the borders."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(lo, hi, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    i0 = np.floor(src)
    t = (src - i0).astype(np.float64)
    f = _torch_cubic(-0.75)
    w = np.stack([f(t + 1), f(t), f(1 - t), f(2 - t)], axis=1)
    return i0.astype(np.int64) - 1, w


def _round_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _frozen(t: Taps) -> Taps:
    t.index.setflags(write=False)
    t.weight.setflags(write=False)
    return t


_BLOCK = 16      # output pixels per dense weight block
_SPLIT = 1024    # fixed-point weights = hi * _SPLIT + lo, so float32 products and sums stay exact integers
_MAX_EXACT_TAPS = 64  # beyond this many taps a float32 sum of lo-parts could exceed 2**24


@dataclass(frozen=True)
class _Block:
    start: int
    stop: int
    lo: int
    hi: int
    parts: tuple[np.ndarray, ...]  # (hi, lo) weight matrices for fixed point, (w,) for float taps


@lru_cache(maxsize=512)
def _blocks(taps: Taps) -> tuple[_Block, ...]:
    """Dense (outputs x inputs) weight blocks along the band, computed once per Taps object."""
    out = []
    for start in range(0, taps.size, _BLOCK):
        stop = min(taps.size, start + _BLOCK)
        idx, w = taps.index[start:stop], taps.weight[start:stop]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        dense = np.zeros((stop - start, hi - lo), dtype=np.float64 if taps.shift is None else np.int64)
        rows = np.arange(stop - start)
        for k in range(idx.shape[1]):
            np.add.at(dense, (rows, idx[:, k] - lo), w[:, k])
        if taps.shift is None:
            parts: tuple[np.ndarray, ...] = (dense.astype(np.float32),)
        else:
            high = np.floor_divide(dense, _SPLIT)
            parts = (high.astype(np.float32), (dense - high * _SPLIT).astype(np.float32))
        out.append(_Block(start, stop, lo, hi, parts))
    return tuple(out)


def apply_rows(rows: np.ndarray, taps: Taps, offset: int = 0) -> np.ndarray:
    """Resample the rows of a 2-D float32 array (N_in, M) to (taps.size, M) with the taps' arithmetic.

    Exact for fixed-point taps: integer weights are split into two parts whose float32 matrix products
    are exact integers (below 2**24), recombined in int32, rounded and clipped as the C loops do; the
    result holds the uint8 levels C would store. The band structure is kept by multiplying dense blocks
    of 16 outputs, so BLAS does the work. ``offset`` is the input index of ``rows[0]``.
    """
    fixed = taps.shift is not None
    out = np.empty((taps.size, rows.shape[1]), dtype=np.int32 if fixed else np.float32)
    for b in _blocks(taps):
        src = rows[b.lo - offset:b.hi - offset]
        if fixed:
            dst = out[b.start:b.stop]
            np.copyto(dst, b.parts[0] @ src, casting="unsafe")
            dst *= _SPLIT
            dst += (b.parts[1] @ src).astype(np.int32)
        else:
            np.matmul(b.parts[0], src, out=out[b.start:b.stop])
    if not fixed:
        return out
    out += 1 << (taps.shift - 1)
    np.right_shift(out, taps.shift, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.float32)


def native_available() -> bool:
    return _native is not None


def apply_native(img: np.ndarray, taps: Taps, axis: int) -> np.ndarray:
    """One pass in C over H x W x C data that starts at input index ``taps.start``.

    Fixed-point taps on uint8 data, or float taps on float32 data.
    """
    idx, w = taps.local
    if axis == 1:
        # Columns are resampled as rows of the pixel-wise transpose: the row kernel vectorises.
        return cv2.transpose(apply_native(cv2.transpose(img).reshape(img.shape[1], img.shape[0], -1), taps, 0)
                             ).reshape(img.shape[0], taps.size, img.shape[2])
    out = np.empty((taps.size, img.shape[1], img.shape[2]), dtype=img.dtype)
    _native.rows(img, out, idx, w, taps.shift or 0)
    return out


def matmul_exact(taps: Taps) -> bool:
    """Whether :func:`apply_rows` reproduces the integer arithmetic of these taps exactly."""
    return taps.shift is None or (taps.index.shape[1] <= _MAX_EXACT_TAPS and taps.index.shape[1] > 1)


def apply(img: np.ndarray, taps: Taps, axis: int) -> np.ndarray:
    """Resample ``img`` (H x W x C) along ``axis`` (0 rows, 1 columns) with the taps' arithmetic."""
    if axis == 1 and img.ndim == 3 and taps.index.shape[1] > 1:
        # Gathering whole rows is contiguous copying; gathering columns is strided. Transpose once.
        lo, hi = int(taps.index.min()), int(taps.index.max()) + 1
        flipped = np.ascontiguousarray(img[:, lo:hi].transpose(1, 0, 2))
        return np.ascontiguousarray(_apply0(flipped, Taps(taps.index - lo, taps.weight, taps.shift)).transpose(1, 0, 2))
    if axis == 1:
        return _apply0(img.swapaxes(0, 1), taps).swapaxes(0, 1)
    return _apply0(img, taps)


def _apply0(img: np.ndarray, taps: Taps) -> np.ndarray:
    axis = 0
    ksize = taps.index.shape[1]
    bshape = [1] * img.ndim
    bshape[axis] = taps.size
    if taps.shift is None:
        acc = None
        for k in range(ksize):
            term = np.take(img, taps.index[:, k], axis=axis) * taps.weight[:, k].reshape(bshape)
            acc = term if acc is None else acc + term
        return acc.astype(np.float32, copy=False)
    if taps.shift == 0 and ksize == 1:
        return np.take(img, taps.index[:, 0], axis=axis)
    out_shape = list(img.shape)
    out_shape[axis] = taps.size
    acc = np.full(out_shape, 1 << (taps.shift - 1), dtype=np.int32)
    for k in range(ksize):
        wk = taps.weight[:, k]
        if not wk.any():
            continue
        acc += np.take(img, taps.index[:, k], axis=axis) * wk.reshape(bshape)
    np.right_shift(acc, taps.shift, out=acc)
    return np.clip(acc, 0, 255).astype(np.uint8)
