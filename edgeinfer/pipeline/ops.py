"""The op table: every preprocessing operation exists once, here.

Each :class:`Op` holds its parameter checks, its implementation (numpy/OpenCV on an H x W x C array)
and its description. The converters emit these names, the preprocessor runs them, ``inspect`` prints
them; nobody keeps a list of their own.

Arrays flow as H x W x C; ``uint8`` until a ``to_float`` step, ``float32`` after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from edgeinfer.pipeline import resample
from edgeinfer.errors import ImageError, SpecError

MAX_SIDE = 16384  # refuse absurd sizes before allocating

PIL_FILTERS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
TORCH_FILTERS = ("nearest", "nearest_exact", "bilinear", "bicubic", "lanczos")
# OpenCV-trained pipelines call cv2.resize themselves: running the same call is exact by construction.
CV2_FLAGS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
             "area": cv2.INTER_AREA, "lanczos4": cv2.INTER_LANCZOS4, "nearest_exact": cv2.INTER_NEAREST_EXACT}
BACKENDS = {"pil": PIL_FILTERS, "torch": TORCH_FILTERS, "opencv": tuple(CV2_FLAGS)}
RESIZE_RULES = ("shorter", "longer", "exact", "keep_ratio")
# How a shorter/longer-side resize sizes the other side: torchvision truncates int(size * long / short);
# hand-written code (PaddleClas, OpenCV scripts) rounds it.
LONG_SIDES = ("truncate", "round")
# Pillow 13 runs the vertical pass first when the height shrinks by more than twice the width's
# shrink; earlier Pillow always runs the horizontal pass first. The intermediate is rounded to uint8, so
# the order changes pixels.
PIL_PASS_ORDERS = ("horizontal_first", "pillow13")
PAD_MODES = ("constant", "edge", "reflect", "symmetric")
FLOAT_SCALES = ("div255", "mul_inv255", "none")
# How torch resizes a uint8 tensor: "native" is its uint8 kernel (v2 on AVX2/arm64 CPUs); "float_round"
# converts to float32, interpolates, clamps (bicubic/lanczos) and rounds half to even (v1, other CPUs).
UINT8_ARITHMETIC = ("native", "float_round")

_FIX = "Re-export the model with converters.export(...) from a supported transform."

Params = Mapping[str, Any]
Window = tuple[int, int, int, int]  # top, left, height, width of the output to compute


# -- parameter checks ------------------------------------------------------------------------------
def _fail(where: str, key: str, expected: str, found: Any) -> None:
    raise SpecError(f"{where} has {key}={found!r}; expected {expected}. {_FIX}")


def _size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_fill(where: str, key: str, v: Any) -> None:
    ok = _number(v) or (isinstance(v, (list, tuple)) and 0 < len(v) <= 4 and all(_number(x) for x in v))
    if not ok:
        _fail(where, key, "a number or a list of 1-4 numbers", v)


@dataclass(frozen=True)
class Op:
    """One preprocessing operation: its checks, its implementation and its description."""

    name: str
    required: tuple[str, ...]
    optional: Mapping[str, Any]
    check: Callable[[str, Params], None]
    run: Callable[[np.ndarray, Params], np.ndarray]
    title: str
    # Geometric ops say where their input lands in their output (and so how to map points back);
    # colour and value ops leave the geometry alone (None).
    place: "Callable[[int, int, Params], Placement] | None" = None

    def validate(self, params: Params, where: str) -> None:
        missing = [k for k in self.required if k not in params]
        if missing:
            raise SpecError(f"{where} is missing {missing}; required: {list(self.required)}. {_FIX}")
        unknown = sorted(set(params) - set(self.required) - set(self.optional))
        if unknown:
            raise SpecError(f"{where} has unknown parameter(s) {unknown}; allowed: "
                            f"{sorted(set(self.required) | set(self.optional))}. {_FIX}")
        self.check(where, params)

    def with_defaults(self, params: Params) -> dict[str, Any]:
        return {**params, **{k: v for k, v in self.optional.items() if k not in params}}


def contiguous_rows(img: np.ndarray) -> np.ndarray:
    """``img`` itself when each row is one contiguous run of pixels, else a compact copy.

    A BGR frame flipped to RGB is a negative-stride view; OpenCV copies such input slowly on every call
    (6 ms for a 1080p frame), so callers copy once, after cropping to what they need.
    """
    if img.strides[-1] == img.itemsize and (img.ndim < 3 or img.strides[1] == img.shape[2] * img.itemsize):
        return img
    if img.ndim == 3 and img.shape[2] == 3 and img.strides[2] == -img.itemsize:
        flipped = img[..., ::-1]  # the caller's own BGR layout: swap channels with OpenCV instead
        if flipped.strides[1] == 3 * img.itemsize and img.dtype in (np.uint8, np.float32):
            return cv2.cvtColor(flipped, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def per_channel(fn: Callable[[np.ndarray], np.ndarray], img: np.ndarray) -> np.ndarray:
    """Apply a channel-independent OpenCV operation; a channel-reversed view is processed in its own
    (BGR) layout and the small result flipped back, so the full frame is never copied."""
    if img.ndim == 3 and img.shape[2] == 3 and img.strides[2] == -img.itemsize:
        flipped = img[..., ::-1]
        if flipped.strides[1] == 3 * img.itemsize:
            return fn(flipped)[..., ::-1]
    return fn(contiguous_rows(img))


# -- resize ----------------------------------------------------------------------------------------
def resize_output_size(h: int, w: int, p: Params) -> tuple[int, int]:
    """Output (height, width) of a resize step for an h x w input, by torchvision's/timm's rules."""
    rule, size = p["rule"], p["size"]
    if rule == "exact":
        return int(size[0]), int(size[1])
    if rule == "keep_ratio":  # timm ResizeKeepRatio
        longest = float(p.get("longest", 0.0))
        rh, rw = h / size[0], w / size[1]
        ratio = max(rh, rw) * longest + min(rh, rw) * (1.0 - longest)
        return max(1, round(h / ratio)), max(1, round(w / ratio))
    short, long = (w, h) if w <= h else (h, w)
    if p.get("long_side", "truncate") == "round":
        # hand-written deployment code (PaddleClas' ResizeImage(resize_short=...), most OpenCV scripts): one
        # factor, each side rounded -- Python's round, as they call it
        if rule == "longer":
            f = int(size) / long
            new_short, new_long = int(round(short * f)), int(size)
        else:
            f = int(size) / short
            new_short, new_long = int(size), int(round(long * f))
    elif rule == "longer":  # torchvision v2 Resize(size=None, max_size=n)
        new_short, new_long = int(int(size) * short / long), int(size)
    else:  # "shorter": torchvision Resize(int), with its integer truncation of the long side
        new_short, new_long = int(size), int(int(size) * long / short)
    max_size = p.get("max_size")
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), int(max_size)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return max(new_h, 1), max(new_w, 1)


def _check_resize(where: str, p: Params) -> None:
    rule = p["rule"]
    if rule not in RESIZE_RULES:
        _fail(where, "rule", f"one of {RESIZE_RULES}", rule)
    size = p["size"]
    if rule in ("shorter", "longer"):
        if not _size(size):
            _fail(where, "size", f"an int in 1..{MAX_SIDE} (the {rule} side)", size)
    elif not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_size(s) for s in size)):
        _fail(where, "size", f"[height, width] with ints in 1..{MAX_SIDE}", size)
    if p.get("long_side", "truncate") not in LONG_SIDES:
        _fail(where, "long_side", f"one of {LONG_SIDES}", p.get("long_side"))
    if p.get("long_side", "truncate") == "round" and rule not in ("shorter", "longer"):
        _fail(where, "long_side", "'truncate' unless the rule is 'shorter' or 'longer'", p.get("long_side"))
    max_size = p.get("max_size")
    if max_size is not None and (rule != "shorter" or not _size(max_size) or max_size <= size):
        _fail(where, "max_size", "null, or an int larger than size (rule 'shorter' only)", max_size)
    longest = p.get("longest", 0.0)
    if not (_number(longest) and 0.0 <= longest <= 1.0):
        _fail(where, "longest", "a number in [0, 1]", longest)
    backend = p.get("backend", "pil")
    if backend not in BACKENDS:
        _fail(where, "backend", f"one of {sorted(BACKENDS)}", backend)
    if p["interpolation"] not in BACKENDS[backend]:
        _fail(where, "interpolation", f"one of {BACKENDS[backend]} for backend '{backend}'", p["interpolation"])
    if not isinstance(p.get("antialias", True), bool):
        _fail(where, "antialias", "true or false", p.get("antialias"))
    if p.get("uint8_arithmetic", "native") not in UINT8_ARITHMETIC:
        _fail(where, "uint8_arithmetic", f"one of {UINT8_ARITHMETIC}", p.get("uint8_arithmetic"))
    if backend == "pil" and p.get("pass_order", "horizontal_first") not in PIL_PASS_ORDERS:
        _fail(where, "pass_order", f"one of {PIL_PASS_ORDERS}", p.get("pass_order"))


FAST_REDUCING_GAP = 2.0  # fast mode box-reduces by integer factors while the rest still shrinks >= 2x


def resize(img: np.ndarray, p: Params, window: Window | None = None, *, fast: bool = False,
           convert: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Resize ``img`` by the step's rule and library semantics; compute only ``window`` if given.

    Exact by default. ``fast=True`` first box-reduces a strongly shrunk image by integer factors with
    OpenCV's INTER_AREA (as Pillow's ``reducing_gap`` does), only over the region the output needs, and
    runs the passes in the cheaper order; the pixels then differ slightly from the library's, a cost
    benchmarks/preprocess_parity.py measures. ``convert`` is an elementwise conversion (uint8 -> float)
    the spec applies before this resize: it runs on the pixels the resize reads only.
    """
    h, w = img.shape[:2]
    oh, ow = resize_output_size(h, w, p)
    top, left, wh, ww = window if window is not None else (0, 0, oh, ow)
    backend, filt = p.get("backend", "pil"), p["interpolation"]
    if backend == "pil" and img.dtype != np.uint8:
        raise SpecError("a PIL resize step received float data; PIL resizes 8-bit images. " + _FIX)
    if convert is not None and ((oh, ow) == (h, w) or backend != "torch"):
        img, convert = convert(img), None
    if (backend == "torch" and img.dtype == np.uint8 and convert is None and (oh, ow) != (h, w)
            and p.get("uint8_arithmetic", "native") == "float_round" and filt not in ("nearest", "nearest_exact")):
        out = resize(img, p, window, fast=fast, convert=lambda a: a.astype(np.float32))
        if filt in ("bicubic", "lanczos"):
            out = np.clip(out, 0, 255)
        return np.rint(out).astype(np.uint8)  # torch.round: half to even, as np.rint
    if (oh, ow) == (h, w):
        return img[top:top + wh, left:left + ww]
    if backend == "opencv":
        out = per_channel(lambda a: cv2.resize(a, (ow, oh), interpolation=CV2_FLAGS[filt]).reshape(oh, ow, -1), img)
        return out[top:top + wh, left:left + ww]
    if backend == "pil":
        def taps(n_in: int, n_out: int, lo: int, hi: int) -> resample.Taps | None:
            return resample.pil_taps(n_in, n_out, filt, lo, hi) if n_in != n_out else None
        vertical_first = p.get("pass_order") == "pillow13" and (h - oh) > 0 and (h - oh) > (w - ow) * 2
    else:
        antialias = bool(p.get("antialias", True)) and filt in ("bilinear", "bicubic", "lanczos")
        u8 = img.dtype == np.uint8 and convert is None

        def taps(n_in: int, n_out: int, lo: int, hi: int) -> resample.Taps | None:
            return resample.torch_taps(n_in, n_out, filt, antialias=antialias, uint8=u8, lo=lo, hi=hi)
        if not u8 and convert is None:
            img = img.astype(np.float32, copy=False)
        vertical_first = False
    origin = (0, 0)
    fy, fx = max(1, int(h / oh / FAST_REDUCING_GAP)), max(1, int(w / ow / FAST_REDUCING_GAP))
    # Box pre-reduction only stands in for filters that themselves average (antialias); nearest, box
    # and non-antialiased kernels keep sharp detail that a box average would smear.
    smooth = filt in ("bilinear", "bicubic", "hamming", "lanczos") and (backend == "pil" or p.get("antialias", True))
    if fast and smooth and convert is None and (fx > 1 or fy > 1):
        img, origin, h, w = _box_reduce(img, fy, fx, taps(h // fy, oh, top, top + wh),
                                        taps(w // fx, ow, left, left + ww))
    rows, cols = taps(h, oh, top, top + wh), taps(w, ow, left, left + ww)
    if fast and rows is not None and cols is not None:
        vertical_first = _vertical_first_is_cheaper(rows, cols)
    return _separable(img, rows, cols, vertical_first, (top, left, wh, ww), origin, convert)


def _box_reduce(img: np.ndarray, fy: int, fx: int, rows: resample.Taps | None,
                cols: resample.Taps | None) -> tuple[np.ndarray, tuple[int, int], int, int]:
    """Box-average ``img`` by (fy, fx) over just the region the reduced-size taps read."""
    h, w = img.shape[0] // fy, img.shape[1] // fx
    r0, r1 = (rows.start, int(rows.index.max()) + 1) if rows is not None else (0, h)
    c0, c1 = (cols.start, int(cols.index.max()) + 1) if cols is not None else (0, w)
    part = img[r0 * fy:r1 * fy, c0 * fx:c1 * fx]
    small = cv2.resize(part, (c1 - c0, r1 - r0), interpolation=cv2.INTER_AREA)
    return small.reshape(r1 - r0, c1 - c0, -1), (r0, c0), h, w


@lru_cache(maxsize=64)
def _nearest_maps(rows: resample.Taps, cols: resample.Taps, r0: int, c0: int) -> tuple[np.ndarray, np.ndarray]:
    shape = (rows.size, cols.size)
    map_x = np.ascontiguousarray(np.broadcast_to((cols.index[:, 0] - c0).astype(np.float32)[None, :], shape))
    map_y = np.ascontiguousarray(np.broadcast_to((rows.index[:, 0] - r0).astype(np.float32)[:, None], shape))
    return map_x, map_y


def _vertical_first_is_cheaper(rows: resample.Taps, cols: resample.Taps) -> bool:
    span_r = int(rows.index.max()) - rows.start + 1
    span_c = int(cols.index.max()) - cols.start + 1
    kr, kc = rows.index.shape[1], cols.index.shape[1]
    horizontal_first = span_r * cols.size * kc + rows.size * cols.size * kr
    vertical_first = span_c * rows.size * kr + rows.size * cols.size * kc
    return vertical_first < horizontal_first


def _separable(img: np.ndarray, rows: resample.Taps | None, cols: resample.Taps | None,
               vertical_first: bool, window: Window, origin: tuple[int, int] = (0, 0),
               convert: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Run the row and column passes; ``img[0, 0]`` is input pixel ``origin`` of the taps' geometry."""
    top, left, wh, ww = window
    oy, ox = origin
    if rows is None:
        img = img[top - oy:top - oy + wh]
    if cols is None:
        img = img[:, left - ox:left - ox + ww]
    # Only the input rows and columns the taps read take part (PIL, too, skips unused rows).
    r0 = c0 = 0
    if rows is not None:
        r0 = rows.start
        img = img[r0 - oy:int(rows.index.max()) + 1 - oy]
    if cols is not None:
        c0 = cols.start
        img = img[:, c0 - ox:int(cols.index.max()) + 1 - ox]
    if convert is not None:
        img = convert(img)
    passes = [(t, axis, off) for t, axis, off in ((cols, 1, c0), (rows, 0, r0)) if t is not None]
    if vertical_first:
        passes.reverse()
    if rows is not None and cols is not None and rows.index.shape[1] == cols.index.shape[1] == 1:
        # nearest: OpenCV's remap with integer-valued maps copies exactly the kept pixels, fast
        map_x, map_y = _nearest_maps(rows, cols, r0, c0)
        out = cv2.remap(contiguous_rows(img), map_x, map_y, cv2.INTER_NEAREST)
        return out.reshape(rows.size, cols.size, img.shape[2])
    img = contiguous_rows(img)
    fixed_u8 = img.dtype == np.uint8 and all(t.shift for t, _, _ in passes)
    float_f32 = img.dtype == np.float32 and all(t.shift is None for t, _, _ in passes)
    if (fixed_u8 or float_f32) and resample.native_available():
        for taps, axis, _ in passes:
            img = resample.apply_native(img, taps, axis)
        return img
    if all(resample.matmul_exact(t) for t, _, _ in passes):
        out = img.astype(np.float32)
        for taps, axis, off in passes:
            out = _pass_rows(out, taps, off) if axis == 0 else _pass_cols(out, taps, off)
        return out.astype(np.uint8) if img.dtype == np.uint8 else out
    for taps, axis, off in passes:
        img = resample.apply(img, _shifted(taps, off), axis)
    return img


def _pass_rows(img: np.ndarray, taps: resample.Taps, offset: int) -> np.ndarray:
    h, w, c = img.shape
    return resample.apply_rows(img.reshape(h, w * c), taps, offset).reshape(taps.size, w, c)


def _pass_cols(img: np.ndarray, taps: resample.Taps, offset: int) -> np.ndarray:
    # A pixel-wise transpose (OpenCV's is fast) turns columns into rows, channels kept interleaved.
    h, w, c = img.shape
    t = cv2.transpose(img).reshape(w, h * c)
    out = resample.apply_rows(t, taps, offset).reshape(taps.size, h, c)
    return cv2.transpose(out).reshape(h, taps.size, c)


def _shifted(t: resample.Taps, offset: int) -> resample.Taps:
    return resample.Taps(t.index - offset, t.weight, t.shift) if offset else t


# -- crop and pad ----------------------------------------------------------------------------------
# "center": torchvision's CenterCrop, offsets int(round((h - th) / 2.0)) (round half to even);
# "center_floor": Hugging Face image processors, int((h - th) / 2.0) -- one pixel apart when h - th is 3 mod 4;
# the corners are FiveCrop's (five-/ten-crop test-time augmentation).
ANCHORS = ("center", "center_floor", "top_left", "top_right", "bottom_left", "bottom_right")


def center_crop_window(h: int, w: int, th: int, tw: int, anchor: str = "center") -> tuple[int, int]:
    """(top, left) of a crop of th x tw from h x w, by the anchor's rule (see :data:`ANCHORS`)."""
    if anchor == "center":
        return int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    if anchor == "center_floor":
        return (h - th) // 2, (w - tw) // 2
    top = 0 if anchor.startswith("top") else h - th
    left = 0 if anchor.endswith("left") else w - tw
    return top, left


def _check_center_crop(where: str, p: Params) -> None:
    size = p["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_size(s) for s in size)):
        _fail(where, "size", f"[height, width] with ints in 1..{MAX_SIDE}", size)
    _check_fill(where, "fill", p.get("fill", 0))
    if p.get("anchor", "center") not in ANCHORS:
        _fail(where, "anchor", f"one of {ANCHORS}", p.get("anchor"))


def center_crop(img: np.ndarray, p: Params) -> np.ndarray:
    th, tw = p["size"]
    h, w = img.shape[:2]
    if th > h or tw > w:
        # torchvision pads (left/top get the smaller half) and crops what is left
        pl, pt = ((tw - w) // 2 if tw > w else 0), ((th - h) // 2 if th > h else 0)
        pr, pb = ((tw - w + 1) // 2 if tw > w else 0), ((th - h + 1) // 2 if th > h else 0)
        img = pad(img, {"padding": [pl, pt, pr, pb], "fill": p.get("fill", 0), "mode": "constant"})
        h, w = img.shape[:2]
    top, left = center_crop_window(h, w, th, tw, p.get("anchor", "center"))
    return img[top:top + th, left:left + tw]


def _check_pad(where: str, p: Params) -> None:
    padding = p["padding"]
    if not (isinstance(padding, (list, tuple)) and len(padding) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SIDE for v in padding)):
        _fail(where, "padding", "[left, top, right, bottom] with ints >= 0", padding)
    if p.get("mode", "constant") not in PAD_MODES:
        _fail(where, "mode", f"one of {PAD_MODES}", p.get("mode"))
    _check_fill(where, "fill", p.get("fill", 0))


def pad(img: np.ndarray, p: Params) -> np.ndarray:
    pl, pt, pr, pb = p["padding"]
    mode = p.get("mode", "constant")
    if mode != "constant":
        return np.pad(img, [(pt, pb), (pl, pr)] + [(0, 0)] * (img.ndim - 2), mode=mode)
    fill = np.asarray(p.get("fill", 0), dtype=np.float64).reshape(-1)
    channels = img.shape[2]
    if fill.size not in (1, channels):
        raise ImageError(f"pad fill has {fill.size} values but the image has {channels} channels; "
                         "give one value or one per channel.")
    values = np.broadcast_to(fill, (channels,))
    if img.dtype == np.uint8:
        values = values.astype(np.uint8)  # as a uint8 tensor/PIL image stores the fill
    out = cv2.copyMakeBorder(contiguous_rows(img), pt, pb, pl, pr, cv2.BORDER_CONSTANT,
                             value=[float(v) for v in values] + [0.0] * (4 - channels))
    return out.reshape(img.shape[0] + pt + pb, img.shape[1] + pl + pr, channels)


# -- pad to a square (hand-written detectors: PaddleDetection-style scripts, many OpenCV pipelines) --------
# "top_left": the image stays at the origin, the padding goes right and below (boxes need no offset);
# "center": half each side, the odd pixel right/below (top = (side - h) // 2).
SQUARE_ANCHORS = ("top_left", "center")


def _square_padding(h: int, w: int, p: Params) -> list[int]:
    """[left, top, right, bottom] that make h x w a square of its longer side."""
    side = max(h, w)
    if p.get("anchor", "top_left") == "center":
        left, top = (side - w) // 2, (side - h) // 2
    else:
        left, top = 0, 0
    return [left, top, side - w - left, side - h - top]


def _check_pad_square(where: str, p: Params) -> None:
    if p.get("anchor", "top_left") not in SQUARE_ANCHORS:
        _fail(where, "anchor", f"one of {SQUARE_ANCHORS}", p.get("anchor"))
    _check_fill(where, "fill", p.get("fill", 0))


def pad_square(img: np.ndarray, p: Params) -> np.ndarray:
    padding = _square_padding(img.shape[0], img.shape[1], p)
    return img if not any(padding) else pad(img, {"padding": padding, "fill": p.get("fill", 0), "mode": "constant"})


# -- letterbox (Ultralytics / YOLO) ------------------------------------------------------------------
def letterbox_geometry(h: int, w: int, p: Params) -> tuple[int, int, int, int, int, int]:
    """(new_h, new_w, top, bottom, left, right) of an Ultralytics-style letterbox for an h x w image."""
    th, tw = p["size"]
    r = min(th / h, tw / w)
    if not p.get("scaleup", True):
        r = min(r, 1.0)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)  # thin images keep at least one pixel
    dw, dh = tw - new_w, th - new_h
    if p.get("auto", False):  # minimum rectangle: pad only up to a multiple of the stride
        dw, dh = dw % p.get("stride", 32), dh % p.get("stride", 32)
    elif p.get("scale_fill", False):  # stretch to the target, no padding
        new_w, new_h, dw, dh = tw, th, 0, 0
    if p.get("center", True):
        dw, dh = dw / 2, dh / 2
        top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
        left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    else:
        top, left = 0, 0
        bottom, right = int(round(dh + 0.1)), int(round(dw + 0.1))
    return new_h, new_w, top, bottom, left, right


def _check_letterbox(where: str, p: Params) -> None:
    size = p["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_size(v) for v in size)):
        _fail(where, "size", f"[height, width] with ints in 1..{MAX_SIDE}", size)
    for key in ("auto", "scaleup", "center", "scale_fill"):
        if not isinstance(p.get(key, True), bool):
            _fail(where, key, "true or false", p.get(key))
    if not _size(p.get("stride", 32)):
        _fail(where, "stride", "a positive int", p.get("stride"))
    if p.get("interpolation", "bilinear") not in CV2_FLAGS:
        _fail(where, "interpolation", f"one of {tuple(CV2_FLAGS)}", p.get("interpolation"))
    _check_fill(where, "fill", p.get("fill", 114))


def letterbox(img: np.ndarray, p: Params) -> np.ndarray:
    h, w = img.shape[:2]
    new_h, new_w, top, bottom, left, right = letterbox_geometry(h, w, p)
    if (new_h, new_w) != (h, w):
        flag = CV2_FLAGS[p.get("interpolation", "bilinear")]
        img = per_channel(lambda a: cv2.resize(a, (new_w, new_h), interpolation=flag).reshape(new_h, new_w, -1), img)
    return pad(img, {"padding": [left, top, right, bottom], "fill": p.get("fill", 114), "mode": "constant"})


# -- colour and values -----------------------------------------------------------------------------
def _check_grayscale(where: str, p: Params) -> None:
    if p["channels"] not in (1, 3):
        _fail(where, "channels", "1 or 3", p["channels"])
    if p.get("backend", "pil") not in BACKENDS:
        _fail(where, "backend", f"one of {sorted(BACKENDS)}", p.get("backend"))


def pil_luma(pixels: np.ndarray, channels: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """PIL's ``convert('L')`` of a uint8 image whose R, G, B are ``pixels[..., channels]``: ITU-R 601-2
    weights in 16-bit fixed point, rounded (H x W x 1)."""
    k = pixels.shape[2]
    native = getattr(resample._native, "luma", None)
    if native is not None and pixels.dtype == np.uint8 and k <= 4 and pixels.strides[2] == 1 and pixels.strides[1] == k:
        out = np.empty(pixels.shape[:2] + (1,), dtype=np.uint8)
        native(pixels, out, *channels)  # a 1080p BGR frame: 0.6 ms in C, 5.5 ms in numpy
        return out
    r, g, b = (pixels[..., c] for c in channels)
    acc = np.multiply(r, 19595, dtype=np.uint32)
    acc += np.multiply(g, 38470, dtype=np.uint32)
    acc += np.multiply(b, 7471, dtype=np.uint32)
    acc += 0x8000
    acc >>= 16
    return acc.astype(np.uint8)[..., None]


def grayscale(img: np.ndarray, p: Params) -> np.ndarray:
    if img.shape[2] == 1:
        gray = img
    elif p.get("backend", "pil") == "pil" and img.dtype == np.uint8:
        gray = pil_luma(img)
    else:
        # torchvision on tensors: r*0.2989 + g*0.587 + b*0.114 in float32, truncated back to uint8
        f = img.astype(np.float32)
        g = f[..., 0] * np.float32(0.2989) + f[..., 1] * np.float32(0.587)
        g = g + f[..., 2] * np.float32(0.114)
        gray = (g.astype(img.dtype) if img.dtype == np.uint8 else g)[..., None]
    return np.repeat(gray, p["channels"], axis=2) if p["channels"] == 3 else gray


def _check_to_float(where: str, p: Params) -> None:
    if p["scale"] not in FLOAT_SCALES:
        _fail(where, "scale", f"one of {FLOAT_SCALES}", p["scale"])


def to_float(img: np.ndarray, p: Params) -> np.ndarray:
    if img.dtype != np.uint8:
        return img.astype(np.float32, copy=False)
    f = img.astype(np.float32)
    if p["scale"] == "div255":  # ToTensor / ConvertImageDtype: x / 255
        return f / np.float32(255)
    if p["scale"] == "mul_inv255":  # v2.ToDtype(scale=True): x * (1 / 255)
        return f * np.float32(1.0 / 255)
    return f


def _check_normalize(where: str, p: Params) -> None:
    for key in ("mean", "std"):
        v = p[key]
        if not (isinstance(v, (list, tuple)) and 0 < len(v) <= 4 and all(_number(x) for x in v)):
            _fail(where, key, "a list of 1-4 finite numbers", v)
    if any(s == 0 for s in p["std"]):
        _fail(where, "std", "non-zero values", p["std"])


def normalize(img: np.ndarray, p: Params) -> np.ndarray:
    mean = np.asarray(p["mean"], dtype=np.float32)
    std = np.asarray(p["std"], dtype=np.float32)
    if mean.size not in (1, img.shape[2]) or std.size not in (1, img.shape[2]):
        raise ImageError(f"normalize has {mean.size} means / {std.size} stds for a {img.shape[2]}-channel "
                         "image; the spec's channel count disagrees with its steps. " + _FIX)
    # torchvision: tensor.sub_(mean).div_(std) in float32
    return (img.astype(np.float32, copy=False) - mean) / std


# -- geometry: where each geometric op puts its input, and the way back -----------------------------
@dataclass(frozen=True)
class Placement:
    """A geometric step on an ``in_hw`` image giving ``out_hw``: output = input * scale + offset, per axis,
    in pixel-edge coordinates (x right, y down). ``to_input`` maps points of the output back."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)  # x, y
    offset: tuple[float, float] = (0.0, 0.0)  # x, y

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Points (..., 2) of the output as points of the input (float32, not clipped)."""
        scale = np.asarray(self.scale, dtype=np.float32)
        offset = np.asarray(self.offset, dtype=np.float32)
        return ((xy - offset) / scale).astype(np.float32, copy=False)


def _place_resize(h: int, w: int, p: Params) -> Placement:
    oh, ow = resize_output_size(h, w, p)
    return Placement((h, w), (oh, ow), (ow / w, oh / h))


def _place_center_crop(h: int, w: int, p: Params) -> Placement:
    th, tw = p["size"]
    pl, pt = ((tw - w) // 2 if tw > w else 0), ((th - h) // 2 if th > h else 0)  # the padding center_crop adds
    ph, pw = max(h, th), max(w, tw)
    top, left = center_crop_window(ph, pw, th, tw, p.get("anchor", "center"))
    return Placement((h, w), (th, tw), offset=(pl - left, pt - top))


def _place_pad(h: int, w: int, p: Params) -> Placement:
    left, top, right, bottom = p["padding"]
    return Placement((h, w), (h + top + bottom, w + left + right), offset=(left, top))


def _place_pad_square(h: int, w: int, p: Params) -> Placement:
    left, top, right, bottom = _square_padding(h, w, p)
    return Placement((h, w), (h + top + bottom, w + left + right), offset=(left, top))


def _place_letterbox(h: int, w: int, p: Params) -> Placement:
    """The inverse Ultralytics' ``scale_boxes`` (8.4) applies to its letterbox, worked out from the sizes
    alone: gain = the smaller output/input ratio of the letterboxed shape, each side re-rounded as the
    letterbox rounds it, a per-axis scale from those sides, and the padding rounded with its -0.1 nudge."""
    new_h, new_w, top, bottom, left, right = letterbox_geometry(h, w, p)
    oh, ow = new_h + top + bottom, new_w + left + right
    if p.get("scale_fill", False):
        return Placement((h, w), (oh, ow), (ow / w, oh / h))
    if not p.get("center", True) or not p.get("scaleup", True):
        # Ultralytics' inverse re-derives a centred padding and an upscaling gain from the sizes: for a
        # corner-padded or never-upscaled letterbox it disagrees with the pixels (by up to the whole padding),
        # so the way back is what the forward step did
        return Placement((h, w), (oh, ow), (new_w / w, new_h / h), (left, top))
    gain = min(oh / h, ow / w)
    rh, rw = max(round(h * gain), 1), max(round(w * gain), 1)
    return Placement((h, w), (oh, ow), (rw / w, rh / h), (round((ow - rw) / 2 - 0.1), round((oh - rh) / 2 - 0.1)))


def placements(steps: Sequence[tuple[str, Params]], h: int, w: int) -> list[Placement]:
    """The placements of the geometric steps for an h x w image, in order (empty when none moves pixels)."""
    out = []
    for name, params in steps:
        op = get(name)
        if op.place is not None:
            pl = op.place(h, w, op.with_defaults(params))
            out.append(pl)
            h, w = pl.out_hw
    return out


def to_source(xy: np.ndarray, chain: Sequence[Placement]) -> np.ndarray:
    """Points (..., 2) in model-input pixels mapped back through every placement to the original image."""
    for pl in reversed(chain):
        xy = pl.to_input(xy)
    return xy


# -- the table -------------------------------------------------------------------------------------
def _describe_resize(p: Params) -> str:
    size = p["size"]
    extra = f", max_size={p['max_size']}" if p.get("max_size") else ""
    extra += f", longest={p.get('longest', 0.0)}" if p["rule"] == "keep_ratio" else ""
    extra += ", long_side=round" if p.get("long_side", "truncate") == "round" else ""
    aa = f", antialias={p.get('antialias', True)}" if p.get("backend", "pil") == "torch" else ""
    return (f"Resize(size={size} ({p['rule']}){extra}, interpolation={p['interpolation']}{aa}, "
            f"backend={p.get('backend', 'pil')})")


OPS: dict[str, Op] = {
    "resize": Op("resize", ("rule", "size", "interpolation"),
                 {"max_size": None, "longest": 0.0, "long_side": "truncate", "antialias": True, "backend": "pil",
                  "pass_order": "horizontal_first", "uint8_arithmetic": "native"},
                 _check_resize, resize, "resize", _place_resize),
    "center_crop": Op("center_crop", ("size",), {"fill": 0, "anchor": "center"}, _check_center_crop, center_crop,
                      "CenterCrop", _place_center_crop),
    "pad": Op("pad", ("padding",), {"fill": 0, "mode": "constant"}, _check_pad, pad, "Pad", _place_pad),
    "pad_square": Op("pad_square", (), {"anchor": "top_left", "fill": 0}, _check_pad_square, pad_square,
                     "PadToSquare", _place_pad_square),
    "letterbox": Op("letterbox", ("size",), {"fill": 114, "auto": False, "scale_fill": False, "stride": 32,
                                             "scaleup": True, "center": True, "interpolation": "bilinear"},
                    _check_letterbox, letterbox, "LetterBox", _place_letterbox),
    "grayscale": Op("grayscale", ("channels",), {"backend": "pil"}, _check_grayscale, grayscale, "Grayscale"),
    "to_float": Op("to_float", ("scale",), {}, _check_to_float, to_float, "ToFloat"),
    "normalize": Op("normalize", ("mean", "std"), {}, _check_normalize, normalize, "Normalize"),
}


def get(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise SpecError(f"op {name!r} is unknown to this runtime; known ops: {sorted(OPS)}. Upgrade edgeinfer "
                        "on the device, or re-export with the converters that match it.") from None


def validate(name: Any, params: Params, *, where: str) -> None:
    if not isinstance(name, str):
        raise SpecError(f"{where}: op must be a string, found {name!r}. {_FIX}")
    get(name).validate(params, where)


def validate_sequence(names: Sequence[str], params: Sequence[Params], *, channels: int) -> None:
    """Check what no single step can: PIL resizes before the float conversion, one conversion only."""
    floats = [i for i, n in enumerate(names) if n == "to_float"]
    if len(floats) != 1:
        raise SpecError(f"steps: expected exactly one 'to_float' step, found {len(floats)}. {_FIX}")
    for i, (n, p) in enumerate(zip(names, params)):
        if n == "resize" and p.get("backend", "pil") == "pil" and i > floats[0]:
            raise SpecError(f"step {i} 'resize' uses backend 'pil' after 'to_float' (step {floats[0]}); "
                            f"PIL resizes 8-bit images only. {_FIX}")
        if n == "normalize" and i < floats[0]:
            raise SpecError(f"step {i} 'normalize' comes before 'to_float' (step {floats[0]}). {_FIX}")


def describe(name: str, params: Params) -> str:
    """A torchvision-like one-line rendering of a step."""
    op = OPS.get(name)
    if op is None:
        return f"<unknown op {name!r}>"
    p = op.with_defaults(params)
    if name == "resize":
        return _describe_resize(p)
    args = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={list(v) if isinstance(v, tuple) else v}"
                     for k, v in p.items())
    return f"{op.title}({args})"
