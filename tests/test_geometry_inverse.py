"""The way back through every geometric op agrees with the forward pixels: markers drawn at known points of a
real photo, found again in the model input, mapped back through the op table's inverse (edgeinfer.pipeline.ops)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from edgeinfer.pipeline import ops

MARK = 12  # marker side in source pixels: large enough that resampling keeps its centroid


def _marked(h: int, w: int, points: list[tuple[int, int]], photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dark copy of a real photo (h x w) with one bright square per point; its centres in edge coordinates."""
    img = (cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA) // 8).astype(np.uint8)
    centres = []
    for x, y in points:
        img[y:y + MARK, x:x + MARK] = 255
        centres.append((x + MARK / 2, y + MARK / 2))
    return img, np.asarray(centres, np.float32)


def _found(out: np.ndarray, n: int) -> np.ndarray:
    """The markers' intensity centroids in the output, in edge coordinates (pixel centres at i + 0.5)."""
    grey = out.astype(np.float32).mean(axis=2) if out.ndim == 3 else out.astype(np.float32)
    bright = (grey > 128).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
    blobs = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:n]
    pts = []
    for i in blobs:
        ys, xs = np.nonzero(labels == i)
        wts = np.maximum(grey[ys, xs] - 128, 0)
        pts.append(((xs + 0.5) * wts).sum() / wts.sum())
        pts[-1] = (pts[-1], ((ys + 0.5) * wts).sum() / wts.sum())
    return np.asarray(pts, np.float32)


def _match(found: np.ndarray, want: np.ndarray) -> float:
    return max(float(np.min(np.linalg.norm(found - w, axis=1))) for w in want)


LETTERBOX = [dict(zip(("center", "auto", "scaleup"), v)) for v in itertools.product((True, False), repeat=3)]
SIZES = [(300, 400), (400, 300), (150, 200), (480, 360)]  # landscape and portrait, smaller and larger than 320


@pytest.mark.parametrize("params", LETTERBOX, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_letterbox_inverse_puts_markers_back_where_they_were(params, hw, photos):
    h, w = hw
    points = [(20, 20), (w - 40, 30), (w // 2, h // 2), (30, h - 40)]
    img, want = _marked(h, w, points, photos["chelsea"])
    p = ops.get("letterbox").with_defaults({"size": [320, 320], "fill": 0, **params})
    out = ops.letterbox(img, p)
    got = ops.to_source(_found(out, len(points)), ops.placements([("letterbox", p)], h, w))
    assert _match(got, want) <= 0.5, (params, hw, got, want)


GEOMETRY = [
    ("resize", {"rule": "exact", "size": [200, 260], "interpolation": "bilinear", "backend": "opencv"}),
    ("resize", {"rule": "shorter", "size": 256, "interpolation": "bilinear", "backend": "pil"}),
    ("resize", {"rule": "shorter", "size": 257, "interpolation": "lanczos4", "backend": "opencv", "long_side": "round"}),
    ("pad", {"padding": [7, 3, 11, 5], "fill": 0}),
    *[("pad_square", {"anchor": a, "fill": 0}) for a in ops.SQUARE_ANCHORS],
    *[("center_crop", {"size": [240, 240], "anchor": a}) for a in ops.ANCHORS],
]


@pytest.mark.parametrize("step", GEOMETRY, ids=lambda s: f"{s[0]}-{s[1].get('anchor', s[1].get('rule', ''))}")
def test_every_geometric_op_maps_markers_back(step, photos):
    h, w = 300, 400
    name, params = step
    # a 240 crop of 300 x 400 keeps x in [160, 240) and y in [60, 240) wherever it is anchored
    points = ([(165, 65), (225, 220), (190, 140)] if name == "center_crop" else
              [(60, 60), (w - 90, 80), (w // 2, h // 2), (70, h - 90)])
    img, want = _marked(h, w, points, photos["coffee"])
    op = ops.get(name)
    p = op.with_defaults(params)
    out = op.run(img, p)
    got = ops.to_source(_found(out, len(points)), ops.placements([(name, p)], h, w))
    assert _match(got, want) <= 0.5, (step, got, want)
