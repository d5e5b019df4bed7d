"""The plain form says what hand-written deployment code does: pad to a square then resize, a shorter-side resize
that rounds the long side, floored crop offsets, mean/std written blue first -- each equal to that code's own
pixels on real photos of several aspect ratios, and an ambiguous channel order refused, never guessed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeinfer import Preprocessor, SpecError
from edgeinfer.importers import from_plain
from edgeinfer.spec import SCHEMA, InputSpec, OutputSpec, Spec

SIZES = [(512, 512), (400, 300), (300, 451), (90, 160), (1080, 1920)]


def _frames(photos) -> list[np.ndarray]:
    """Real photos as BGR frames of several aspect ratios (square, portrait, landscape, small, 1080p)."""
    names = list(photos)
    return [cv2.resize(np.ascontiguousarray(photos[names[i % len(names)]][..., ::-1]), (w, h),
                       interpolation=cv2.INTER_AREA) for i, (h, w) in enumerate(SIZES)]


def _pipeline(source: dict, hw: tuple[int, int], channel_order: str = "rgb") -> Preprocessor:
    pre = from_plain(source)
    inp = InputSpec(name="x", shape=(None, 3, *hw), layout="NCHW", dtype="float32", channel_order=channel_order)
    return Preprocessor(Spec(schema=SCHEMA, steps=pre.steps, decode=pre.decode, input=inp, task="classification",
                             output=OutputSpec(name="y", kind="logits")).validate())


def _paddle_cls(bgr: np.ndarray) -> np.ndarray:
    """PaddleClas' inference preprocessing (deploy/python/preprocess.py), as its code reads: ResizeImage
    (resize_short=256: one factor, each side rounded, cv2 Lanczos) -> CropImage(224: offsets floored) ->
    NormalizeImage (x / 255 - mean) / std with ImageNet's values -> CHW. The frame stays as OpenCV read it (BGR)
    and mean/std are applied in that order as the config lists them."""
    h, w = bgr.shape[:2]
    percent = 256 / min(h, w)
    nw, nh = int(round(w * percent)), int(round(h * percent))
    img = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LANCZOS4)
    top, left = (nh - 224) // 2, (nw - 224) // 2
    img = img[top:top + 224, left:left + 224].astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return ((img / 255 - mean) / std).transpose(2, 0, 1)


def test_a_paddleclas_pipeline_in_the_plain_form_gives_its_pixels(photos):
    # the model receives BGR with the mean/std in the order the config writes them: said, not guessed
    source = {"size": 224, "resize": 256, "long_side": "round", "crop_offsets": "floor", "backend": "opencv",
              "interpolation": "lanczos4", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
              "mean_order": "bgr", "channel_order": "bgr"}
    pre = _pipeline(source, (224, 224), channel_order="bgr")
    worst = 0.0
    for frame in _frames(photos):
        ours = pre(frame)[::-1]  # the contract hands the graph BGR: what the package feeds
        worst = max(worst, float(np.abs(ours - _paddle_cls(frame)).max()))
    assert worst <= 1e-6, worst  # the same OpenCV calls in the same order: exact
    # the torchvision defaults (long side truncated, offsets rounded) differ on some of these photos
    plain = _pipeline({k: v for k, v in source.items() if k not in ("long_side", "crop_offsets")}, (224, 224), "bgr")
    assert max(float(np.abs(plain(f)[::-1] - _paddle_cls(f)).max()) for f in _frames(photos)) > 0.1


@pytest.mark.parametrize("anchor", ["top_left", "center"])
def test_pad_to_a_square_then_resize_gives_the_scripts_pixels(photos, anchor):
    source = {"size": 320, "pad_square": {"anchor": anchor, "fill": 0}, "backend": "opencv",
              "interpolation": "bilinear"}
    pre = _pipeline(source, (320, 320))
    for frame in _frames(photos):
        h, w = frame.shape[:2]
        side = max(h, w)
        top, left = ((side - h) // 2, (side - w) // 2) if anchor == "center" else (0, 0)
        square = np.zeros((side, side, 3), np.uint8)
        square[top:top + h, left:left + w] = frame
        want = cv2.resize(square, (320, 320), interpolation=cv2.INTER_LINEAR)[..., ::-1].transpose(2, 0, 1) / 255
        assert np.abs(pre(frame) - want).max() <= 1e-6, (anchor, frame.shape)


def test_ambiguous_or_contradictory_plain_keys_are_refused():
    bgr = {"size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channel_order": "bgr"}
    with pytest.raises(SpecError, match="expected 'mean_order'"):
        from_plain(bgr)
    from_plain({**bgr, "mean": 0.5, "std": 0.5})  # one value for all channels: nothing to be ambiguous about
    rgb = from_plain({**bgr, "mean_order": "rgb"}).steps[-1].params
    blue_first = from_plain({**bgr, "mean_order": "bgr"}).steps[-1].params
    assert blue_first["mean"] == rgb["mean"][::-1] and blue_first["std"] == rgb["std"][::-1]
    for bad, match in (({"size": 224, "long_side": "round"}, "give 'resize' too"),
                       ({"size": 224, "crop_offsets": "floor"}, "give one"),
                       ({"size": 224, "resize": 256, "crop_offsets": "ceil"}, "crop_offsets: expected"),
                       ({"size": 224, "pad_square": True, "resize": 256}, "does not combine"),
                       ({"size": 224, "pad_square": "bottom"}, "anchor"),
                       ({"size": 224, "mean_order": "bgr", "mean": [1, 2]}, "mean")):
        with pytest.raises(SpecError, match=match):
            from_plain(bad)
