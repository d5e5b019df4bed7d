"""The preprocessor: a spec's steps compiled once into a pipeline that turns a frame into model input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from edgeinfer.pipeline import ops
from edgeinfer.errors import ImageError, SpecError
from edgeinfer.pipeline.images import ImageInput, select_channels, to_model_layout
from edgeinfer.spec import Spec, Step

# "exact": the training library's pixels; "fast": box pre-reduction and the cheaper pass order, close
# to but not equal to them (its cost is measured by benchmarks/preprocess_parity.py).
MODES = ("exact", "fast")
Channels = tuple[int, ...]
# A stage takes the pixels as they lie in memory and the channels of them that make the model's colours
# (see images.to_model_layout), and gives both back: channel-independent stages (resize, crop) run on
# the caller's layout -- a BGR frame is never flipped or copied whole -- and the channels are picked
# once, from the small result.
Stage = Callable[[np.ndarray, Channels], tuple[np.ndarray, Channels]]


@dataclass(frozen=True)
class Prepared:
    """A batch of model input and what the later stages need of the images it came from: their (h, w).

    :meth:`edgeinfer.Model.prepare` makes it; ``infer`` (extra inputs fed from the sizes) and ``finish``
    (results mapped back to each image) take it, so no caller can run a batch without its images' sizes.
    """

    batch: np.ndarray  # (N, C, H, W) float32, RGB
    sizes: tuple[tuple[int, int], ...]  # each image's (height, width) before preprocessing

    def __post_init__(self) -> None:
        sizes = tuple((int(h), int(w)) for h, w in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        if self.batch.ndim != 4 or self.batch.shape[0] != len(sizes):
            raise ImageError(f"prepared batch: expected (N, C, H, W) with N = {len(sizes)} image sizes, found "
                             f"{self.batch.shape}.")

    @property
    def input_hw(self) -> tuple[int, int]:
        """The model input's (height, width)."""
        return int(self.batch.shape[2]), int(self.batch.shape[3])

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: slice) -> "Prepared":
        """Some of the images, as their own batch (``prepared[:8]``)."""
        return Prepared(self.batch[index], self.sizes[index])

    @staticmethod
    def concat(parts: Sequence["Prepared"]) -> "Prepared":
        """One batch of several prepared ones of the same input size."""
        return Prepared(np.concatenate([p.batch for p in parts]), tuple(s for p in parts for s in p.sizes))


class Preprocessor:
    """Callable giving the float32 (C, H, W) model input for one image, exactly as training produced it.

    ``pre(image, color="bgr")`` takes an OpenCV frame (BGR), an RGB array with ``color="rgb"``, a
    grayscale or RGBA array, a file path or encoded bytes. ``pre.batch(images)`` stacks to (N, C, H, W).
    """

    def __init__(self, spec: Spec, *, mode: str = "exact") -> None:
        if mode not in MODES:
            raise SpecError(f"preprocess mode: expected one of {MODES}, found {mode!r}.")
        self.spec = spec
        self.mode = mode
        self._stages, self._tail = _compile(spec, fast=mode == "fast")

    def __call__(self, image: ImageInput, *, color: str = "bgr", out: np.ndarray | None = None) -> np.ndarray:
        """The (C, H, W) input for ``image``; written into ``out`` (and returned) when given."""
        return self.check(self.unchecked(image, color=color, out=out))

    def check(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` when it has the model's input shape (a dynamic axis takes any size); else ImageError."""
        c, h, w = self.spec.input.channels, *self.spec.input.height_width
        if arr.shape != (c, h or arr.shape[1], w or arr.shape[2]):  # None: a dynamic axis takes any size
            raise ImageError(
                f"preprocessing produced an input of shape {arr.shape}, the model expects {(c, h, w)}. The "
                "training transform does not fix the output size for this image (a resize without a crop?); "
                "add a crop to the transform and re-export, or feed images of the training aspect ratio.")
        return arr

    def unchecked(self, image: ImageInput, *, color: str = "bgr", out: np.ndarray | None = None) -> np.ndarray:
        """The pipeline's (C, H, W) output without checking it against the spec's input shape."""
        return self.from_layout(*to_model_layout(image, self.spec.decode, color=color), out=out)

    def from_layout(self, pixels: np.ndarray, channels: Channels, *, out: np.ndarray | None = None) -> np.ndarray:
        """The pipeline's output for pixels already decoded by :func:`edgeinfer.pipeline.images.to_model_layout`
        (callers that need the decoded size first, e.g. to map detections back, decode once)."""
        for stage in self._stages:
            pixels, channels = stage(pixels, channels)
        return self._tail(pixels, channels, out)

    def batch(self, images: Iterable[ImageInput], *, color: str = "bgr") -> np.ndarray:
        """Stack preprocessed images into one float32 (N, C, H, W) array."""
        images = images if isinstance(images, (list, tuple)) else list(images)
        if not images:
            raise ImageError("batch: expected at least one image, found none.")
        c, h, w = self.spec.input.channels, *self.spec.input.height_width
        if h is None or w is None:  # a dynamic input: the images must come out one size to be stacked
            arrays = [self(im, color=color) for im in images]
            if len({a.shape for a in arrays}) > 1:
                raise ImageError(f"batch: a dynamic-size model stacks images of one size only; these preprocess "
                                 f"to {sorted({a.shape for a in arrays})}. Predict them one by one.")
            return np.stack(arrays)
        out = np.empty((len(images), c, h, w), dtype=np.float32)
        for i, im in enumerate(images):
            self(im, color=color, out=out[i])  # each image straight into its slot: no stacking copy
        return out

    def __repr__(self) -> str:
        steps = ",\n    ".join(repr(s) for s in self.spec.steps)
        return f"Preprocessor(mode={self.mode!r}, steps=[\n    {steps}\n])"


def _compile(spec: Spec, *, fast: bool) -> tuple[list[Stage], Tail]:
    """Turn steps into stages and a tail, fusing where the fusion cannot change a pixel.

    * resize followed by a center crop that fits computes only the kept window (a 16:9 frame cropped
      to a square discards ~45% of the resized pixels; PIL computes them all);
    * the trailing uint8 -> float -> normalise -> CHW steps become one table lookup per channel, built
      with the same float32 operations, so its values are bit-identical; it reads the channels in
      whatever order they lie (a BGR frame's planes are looked up in RGB order);
    * a float conversion right before a (tensor) resize converts only the pixels the resize reads
      (elementwise conversion commutes with cropping).
    """
    steps = list(spec.steps)
    stages: list[Stage] = []
    i = 0
    while i < len(steps):
        step = steps[i]
        op = ops.get(step.op)
        p = op.with_defaults(step.params)
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        convert = None
        if step.op == "to_float" and nxt is not None and nxt.op == "resize" and nxt.params.get("backend") == "torch":
            convert = lambda a, fp=p: ops.to_float(a, fp)  # noqa: E731
            i += 1
            step, nxt = nxt, steps[i + 1] if i + 1 < len(steps) else None
            p = ops.get("resize").with_defaults(step.params)
        if step.op == "resize" and nxt is not None and nxt.op == "center_crop":
            cp = ops.get("center_crop").with_defaults(nxt.params)
            stages.append(_on_layout(_resize_then_crop(p, cp, fast, convert), _channel_free(nxt)))
            i += 2
            continue
        if step.op == "to_float" and all(s.op == "normalize" for s in steps[i + 1:]):
            return stages, _lookup_tail(p, [ops.get("normalize").with_defaults(s.params) for s in steps[i + 1:]])
        if step.op == "resize":
            stages.append(_on_layout(lambda a, p=p, cv=convert: ops.resize(a, p, fast=fast, convert=cv), True))
        else:
            stages.append(_on_layout(lambda a, run=op.run, p=p: run(a, p), _channel_free(step)))
        i += 1
    return stages, _chw


Tail = Callable[[np.ndarray, Channels, "np.ndarray | None"], np.ndarray]


def _channel_free(step: Step) -> bool:
    """Whether a step treats every channel alike, so it may run on the caller's channel layout."""
    if step.op == "to_float":
        return True
    if ops.get(step.op).place is not None:  # geometry: channel-free unless its padding fills channels apart
        fill = np.asarray(step.params.get("fill", 0), dtype=np.float64).reshape(-1)
        return bool(np.all(fill == fill[0]))
    return False  # grayscale, normalize: per-channel weights


def _on_layout(fn: Callable[[np.ndarray], np.ndarray], channel_free: bool) -> Stage:
    if channel_free:
        return lambda a, ch: (fn(a), ch)

    def stage(a: np.ndarray, ch: Channels) -> tuple[np.ndarray, Channels]:
        res = fn(select_channels(a, ch))
        return res, tuple(range(res.shape[2]))
    return stage


def _resize_then_crop(rp: dict, cp: dict, fast: bool, convert: Callable[[np.ndarray], np.ndarray] | None = None
                      ) -> Callable[[np.ndarray], np.ndarray]:
    th, tw = cp["size"]

    def stage(img: np.ndarray) -> np.ndarray:
        oh, ow = ops.resize_output_size(img.shape[0], img.shape[1], rp)
        if th > oh or tw > ow:
            return ops.center_crop(ops.resize(img, rp, fast=fast, convert=convert), cp)
        top, left = ops.center_crop_window(oh, ow, th, tw, cp.get("anchor", "center"))
        return ops.resize(img, rp, window=(top, left, th, tw), fast=fast, convert=convert)
    return stage


def _lookup_tail(fp: dict, norms: Sequence[dict]) -> Tail:
    cache: dict[int, np.ndarray] = {}

    def table(channels: int) -> np.ndarray:
        if channels not in cache:
            levels = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (1, 256, channels))
            t = ops.to_float(np.ascontiguousarray(levels), fp)
            for n in norms:
                t = ops.normalize(t, n)
            cache[channels] = np.ascontiguousarray(t[0].T)  # (C, 256)
        return cache[channels]

    def tail(img: np.ndarray, channels: Channels, out: np.ndarray | None) -> np.ndarray:
        if img.dtype != np.uint8:
            if sorted(channels) != list(range(img.shape[2])):  # channels repeated or dropped: pick them first
                img, channels = select_channels(img, channels), tuple(range(len(channels)))
            # normalise in the layout's channel order (elementwise: the same values), pick while transposing
            res = ops.to_float(img, fp)
            for n in norms:
                res = ops.normalize(res, _in_layout_order(n, channels))
            return _chw(res, channels, out)
        lut = table(len(channels))
        if out is None or out.shape != (len(channels),) + img.shape[:2]:  # a wrong size is reported by the caller
            out = np.empty((len(channels),) + img.shape[:2], dtype=np.float32)
        planes = cv2.split(ops.contiguous_rows(img)) if img.shape[2] > 1 else [np.ascontiguousarray(img[..., 0])]
        for c, src in enumerate(channels):
            cv2.LUT(planes[src], lut[c].reshape(1, 256), dst=out[c])  # OpenCV's LUT: 8x faster than np.take here
        return out
    return tail


def _in_layout_order(norm: dict, channels: Channels) -> dict:
    """Normalize's per-channel values for pixels whose channel k is the model's channel channels.index(k)."""
    if channels == tuple(range(len(channels))):
        return norm
    return {**norm, **{key: [norm[key][channels.index(k)] for k in range(len(channels))]
                       for key in ("mean", "std") if len(norm[key]) > 1}}


def _chw(img: np.ndarray, channels: Channels, out: np.ndarray | None = None) -> np.ndarray:
    """The model's channels of an (H, W, K) image as a float32 (C, H, W) array, in one copy."""
    shape = (len(channels),) + img.shape[:2]
    if out is None or out.shape != shape:
        out = np.empty(shape, dtype=np.float32)
    planes = img.transpose(2, 0, 1)
    for c, src in enumerate(channels):
        out[c] = planes[src]
    return out
