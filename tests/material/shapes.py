"""Real detectors trained here: coloured shapes on real photos, for detect, pose, obb and segment.

The material the detector tests, ``./edge demo detect`` and the benchmarks share:

- :func:`build_dataset` writes an Ultralytics YOLO dataset (``images/``, ``labels/``, ``data.yaml``):
  filled circles, squares and triangles (3 classes, 24-90 px) pasted 1-4 at a time on random crops
  (240-480 px, varied aspect ratios) of the bundled photos (scikit-image and scikit-learn), from a seed.
- :func:`demo_scene` draws the demo detector's images instead (target ``detect-demo``, :data:`SCENES`): shapes
  as large as the demo video's, cut by the edges, stretched, among unlabelled saturated objects.
- :func:`train` trains ``yolo11n`` (detect, pose, obb, segment) or ``yolo26n`` (NMS-free detect) from its yaml
  (random init, nothing downloaded) and caches the weights by a hash of the recipe.
- :func:`export` runs Ultralytics' own ONNX exporter in the forms a deployment meets (raw static and
  dynamic, ``nms=True``, NMS-free one-to-one).
- :func:`test_frames` draws shapes on photos never used in training, at the aspect ratios a device sees
  (portrait, landscape, small, 1080p).

Geometry: coordinates are continuous image coordinates (the image spans ``[0, W] x [0, H]``, pixel
``(i, j)`` covers ``[j, j+1) x [i, i+1)``), the convention of YOLO labels. Each shape has a centre, a size
``s`` (circle diameter, square side, equilateral triangle side) and an angle (0 for detect and pose).

Keypoints (pose, ``kpt_shape = [3, 3]``, all visible): every class has three, in this order —
triangle: apex, base-left corner, base-right corner; square: top-left, top-right, bottom-right corners;
circle: points on the rim at 270 deg (top), 30 deg (lower right) and 150 deg (lower left) in image
coordinates (y down). No order is mirror-symmetric for all three classes at once, so pose trains with
``fliplr=0`` (Ultralytics would switch it off itself without a ``flip_idx``).

Masks (segment): each shape's label is its outline as drawn, the polygon :meth:`Shape.polygon` gives (the
circle's 72-gon), in Ultralytics' segment format ``class x1 y1 ... xn yn`` normalised to 0-1; Ultralytics
takes the box from the polygon's extent.

Needs torch and ultralytics for :func:`train` and :func:`export` (imported inside them); building the
data needs numpy, OpenCV, scikit-image and scikit-learn.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

CLASSES = ("circle", "square", "triangle")
#: The order is part of every scene's seed (``TASKS.index``): new tasks go at the end.
TASKS = ("detect", "pose", "obb", "segment")
#: Training photos (scikit-image ``skimage.data`` names, then scikit-learn's sample images).
TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                "china", "flower")
#: Photos never used in training: the test frames are drawn on these.
HELDOUT_PHOTOS = ("camera", "motorcycle_left", "retina", "motorcycle_right")
KPT_SHAPE = (3, 3)
SIZE_RANGE = (24, 90)
CROP_RANGE = (240, 480)
SHAPES_PER_IMAGE = (1, 4)
#: Bumped whenever the generator or the training recipe changes in a way the numbers below don't show.
RECIPE_VERSION = 1

#: What :func:`train` can train: target name -> (Ultralytics task, model yaml, target whose weights it starts
#: from or None for random init, default epochs). Starting pose, obb and the NMS-free YOLO26 from the trained
#: detector's weights (Ultralytics transfers every tensor whose name and shape match) is what lets them learn
#: in a few CPU minutes: from random init they need the detector's whole schedule again.
TARGETS = {
    "detect": ("detect", "yolo11n.yaml", None, 30),
    "pose": ("pose", "yolo11n-pose.yaml", "detect", 10),
    "obb": ("obb", "yolo11n-obb.yaml", "detect", 20),
    # YOLO26 carries a one-to-one head: exported with nms=False it is NMS-free (B, 300, 6).
    "detect-nmsfree": ("detect", "yolo26n.yaml", "detect", 20),
    # Box branch and backbone from the detector; the mask prototypes and coefficients learn from scratch.
    "segment": ("segment", "yolo11n-seg.yaml", "detect", 15),
}

#: Targets of ``./edge demo detect`` only (the tests do not train them): same fields as TARGETS. The demo
#: detector starts from the tests' detector and learns the demo video's scenes (:data:`SCENES`).
DEMO_TARGETS = {
    "detect-demo": ("detect", "yolo11n.yaml", "detect", 25),
    # detect-demo, 10 epochs more on its scenes with large flat colour fields added (the demo's retina frame)
    "detect-demo-2": ("detect", "yolo11n.yaml", "detect-demo", 10),
}

#: Targets with scenes of their own (part of their recipe, so of the cache key); the others use :func:`scene`.
#: The demo video (``benchmarks.demo_detect``) pans a 640x400 window across 800x500 frames of the held-out
#: photos: its shapes are 75-200 px (a fifth to a half of the frame's height), cut by the frame's edges as it
#: pans, on photos with red and saturated objects (a motorcycle's tank, a red crate, the orange retina) that
#: are not shapes; a camera may also give any aspect ratio. :func:`demo_scene` draws that:
#:
#: - ``photos``: the training photos, with the scikit-image logo (flat orange and green regions, not shapes);
#: - ``crop``: crop sides in px; ``size``: shape sizes as a share of the crop's shorter side;
#: - ``shapes``: shapes per image (0: a negative image); ``partial``: share of shapes cut by an edge, each
#:   keeping at least ``visible`` of its area (the label is the box of the visible part);
#: - ``stretch``: share of images scaled anisotropically, by an aspect factor up to ``max_stretch``;
#: - ``recolor``: share of photos whose hues are rotated and saturation raised before the shapes are drawn (the
#:   photo's objects become red, cyan, green... and stay unlabelled);
#: - ``distractors``: unlabelled saturated objects per image that are not flat circles, squares or triangles
#:   (shaded irregular polygons, textured blobs, shaded rounded boxes), sized like the shapes.
SCENES = {
    "detect-demo": dict(n_train=500, n_val=80, photos=TRAIN_PHOTOS + ("logo",), crop=(240, 640), size=(0.1, 0.62),
                        shapes=(0, 4), partial=0.35, visible=0.3, stretch=0.5, max_stretch=2.5, recolor=0.5,
                        distractors=(0, 3)),
}
#: ``flat``: share of photos turned into a flat saturated colour field that keeps a trace of the photo's texture,
#: whole or inside a large ellipse (what detect-demo called squares on: the retina, a flat orange disc).
SCENES["detect-demo-2"] = dict(SCENES["detect-demo"], flat=0.2)

#: Export forms: name -> Ultralytics export arguments (imgsz is added by :func:`export`). In Ultralytics
#: 8.4.190 the exporter decides ``end2end`` from ``nms`` alone: ``nms=False`` keeps a one-to-one head NMS-free
#: (output (B, 300, 6), metadata end2end True); the default ``nms=None`` exports a YOLO26 model's one-to-many
#: head raw (B, 4 + nc, anchors), end2end False; ``nms=True`` embeds NMS on that head. ``nms=False`` on a model
#: without a one-to-one head (yolo11n) is silently the raw form.
VARIANTS = {
    "raw": dict(dynamic=False, nms=None),
    "raw-dynamic": dict(dynamic=True, nms=None),
    "nms": dict(dynamic=False, nms=True),
    "nms-dynamic": dict(dynamic=True, nms=True),
    "nmsfree": dict(dynamic=False, nms=False),
    "nmsfree-dynamic": dict(dynamic=True, nms=False),
}

# Measured on the shared 2-core machine (Ultralytics 8.4.190, other jobs running): the recipe of
# ../shared/DATA.md (batch 16, 15 epochs, mosaic) reached mAP50 0.5 here, 0.3-0.6 with other short
# schedules; no mosaic (the validation images and test frames are single scenes), batch 8 (twice the
# optimizer steps for the same compute) and AdamW at 0.003 learn fastest. With these defaults (seconds of
# training, mAP50 / mAP50-95 on the 40 validation images): detect 438 s 0.865 / 0.719; pose 168 s
# 0.956 / 0.817 (keypoints 0.956 / 0.592); obb 289 s 0.810 / 0.649; segment 278 s 0.963 / 0.826
# (masks 0.963 / 0.771).
DEFAULTS = dict(n_train=200, n_val=40, imgsz=320, batch=8, seed=0)
#: Fixed Ultralytics training arguments (part of the recipe, so of the cache key).
TRAIN_ARGS = dict(optimizer="AdamW", lr0=0.003, warmup_epochs=1.0, mosaic=0.0, close_mosaic=0)


@dataclass(frozen=True)
class Shape:
    """One filled shape: class, centre (x, y), size in pixels, angle in degrees (clockwise, y down), BGR."""

    cls: int
    cx: float
    cy: float
    size: float
    angle: float = 0.0
    color: tuple[int, int, int] = (0, 0, 255)

    @property
    def name(self) -> str:
        return CLASSES[self.cls]

    def _rotate(self, pts: np.ndarray) -> np.ndarray:
        a = math.radians(self.angle)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        return pts @ rot.T + np.array([self.cx, self.cy])

    def polygon(self) -> np.ndarray:
        """The outline as (N, 2) float64 points (a 72-gon for the circle)."""
        s = self.size
        if self.name == "circle":
            t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
            return np.stack([self.cx + s / 2 * np.cos(t), self.cy + s / 2 * np.sin(t)], 1)
        if self.name == "square":
            local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * s / 2
        else:  # equilateral triangle, apex up, centred in its bounding box
            h = s * math.sqrt(3) / 2
            local = np.array([[0, -h / 2], [-s / 2, h / 2], [s / 2, h / 2]])
        return self._rotate(local)

    def box(self) -> np.ndarray:
        """Axis-aligned box x1, y1, x2, y2 (float64) around the shape."""
        p = self.polygon()
        if self.name == "circle":
            r = self.size / 2
            return np.array([self.cx - r, self.cy - r, self.cx + r, self.cy + r])
        return np.concatenate([p.min(0), p.max(0)])

    def keypoints(self) -> np.ndarray:
        """The three keypoints (3, 2) in the order the module docstring gives."""
        if self.name == "circle":
            t = np.radians([270.0, 30.0, 150.0]) + math.radians(self.angle)
            return np.stack([self.cx + self.size / 2 * np.cos(t), self.cy + self.size / 2 * np.sin(t)], 1)
        p = self.polygon()
        return p[:3]  # triangle: apex, base-left, base-right; square: top-left, top-right, bottom-right

    def corners(self) -> np.ndarray:
        """The oriented box (4, 2): the shape's own frame rotated by its angle (a circle's is axis-aligned)."""
        s = self.size
        h = s * math.sqrt(3) / 2 if self.name == "triangle" else s
        local = np.array([[-s / 2, -h / 2], [s / 2, -h / 2], [s / 2, h / 2], [-s / 2, h / 2]])
        if self.name == "circle":
            return local + np.array([self.cx, self.cy])
        return self._rotate(local)


def draw(image: np.ndarray, shapes: Iterable[Shape]) -> np.ndarray:
    """A copy of ``image`` (H, W, 3 uint8) with the shapes filled in (hard edges, sub-pixel vertices)."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    for sh in shapes:
        # cv2 puts pixel centres at integers; our pixel (i, j) is centred at (j + 0.5, i + 0.5).
        pts = np.round((sh.polygon() - 0.5) * 16).astype(np.int32)
        cv2.fillPoly(out, [pts], tuple(int(c) for c in sh.color), lineType=cv2.LINE_8, shift=4)
    return out


def load_photo(name: str) -> np.ndarray:
    """A bundled real photo as RGB uint8 (grayscale ones as (H, W)): a ``skimage.data`` name, a scikit-image
    file stem, or scikit-learn's china/flower."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    from skimage import data

    if hasattr(data, name):
        image = np.asarray(getattr(data, name)())
    else:
        import skimage
        import skimage.io

        image = np.asarray(skimage.io.imread(Path(skimage.__file__).parent / "data" / f"{name}.png"))
    return image[..., :3] if image.ndim == 3 else image  # drop alpha; grayscale stays (H, W)


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    import cv2

    hsv = np.array([[[rng.integers(0, 180), rng.integers(170, 256), rng.integers(150, 256)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def random_shapes(rng: np.random.Generator, width: int, height: int, *, count: int,
                  size_range: tuple[float, float] = SIZE_RANGE, rotate: bool = False,
                  background: np.ndarray | None = None) -> list[Shape]:
    """``count`` shapes inside a ``width`` x ``height`` image, their boxes apart by a few pixels.

    With ``background`` (BGR), each colour is redrawn until it stands out from the pixels it covers (the
    test frames: a dark red triangle on the red retina is a test of the photo, not of the deployment).
    """
    shapes: list[Shape] = []
    for _ in range(200 * count):
        if len(shapes) == count:
            break
        s = float(rng.uniform(*size_range))
        s = min(s, 0.9 * min(width, height))
        cls = int(rng.integers(0, len(CLASSES)))
        angle = float(rng.uniform(0, 360)) if rotate else 0.0
        cx = float(rng.uniform(0.55 * s + 1, width - 0.55 * s - 1))
        cy = float(rng.uniform(0.55 * s + 1, height - 0.55 * s - 1))
        cand = Shape(cls, cx, cy, s, angle, _random_color(rng))
        b = cand.box()
        if b[0] < 0 or b[1] < 0 or b[2] > width or b[3] > height:
            continue
        if background is not None:
            under = background[int(b[1]):int(b[3]), int(b[0]):int(b[2])].reshape(-1, 3).mean(0)
            for _ in range(50):
                if np.abs(np.subtract(cand.color, under)).sum() >= 200:
                    break
                cand = Shape(cls, cx, cy, s, angle, _random_color(rng))
        if all(b[2] + 4 < o[0] or o[2] + 4 < b[0] or b[3] + 4 < o[1] or o[3] + 4 < b[1]
               for o in (x.box() for x in shapes)):
            shapes.append(cand)
    return shapes


def _crop(rng: np.random.Generator, photo: np.ndarray, size_range: tuple[int, int]) -> np.ndarray:
    h, w = photo.shape[:2]
    cw, ch = (int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))
    if cw > w or ch > h:  # small photo (chelsea is 300 px tall): upscale so the crop fits
        import cv2

        f = max(cw / w, ch / h)
        photo = cv2.resize(photo, (math.ceil(w * f), math.ceil(h * f)), interpolation=cv2.INTER_LINEAR)
        h, w = photo.shape[:2]
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return np.ascontiguousarray(photo[y0:y0 + ch, x0:x0 + cw])


def scene(seed: int, index: int, *, task: str = "detect", split: str = "train",
          photos: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, list[Shape]]:
    """One dataset image: (background BGR crop, image with the shapes, the shapes), from seed and index."""
    if photos is None:
        photos = {n: load_photo(n) for n in TRAIN_PHOTOS}
    names = sorted(photos)
    rng = np.random.default_rng([seed, index, TASKS.index(task), 0 if split == "train" else 1])
    photo = photos[names[int(rng.integers(0, len(names)))]]
    background = _crop(rng, photo, CROP_RANGE)[..., ::-1].copy()  # RGB photo -> BGR frame
    h, w = background.shape[:2]
    count = int(rng.integers(SHAPES_PER_IMAGE[0], SHAPES_PER_IMAGE[1] + 1))
    shapes = random_shapes(rng, w, h, count=count, rotate=task == "obb")
    return background, draw(background, shapes), shapes


def label_line(shape: Shape, width: int, height: int, task: str) -> str:
    """The shape's line in an Ultralytics label file for ``task`` (coordinates normalised to 0-1)."""
    norm = np.array([width, height], float)
    if task == "obb":  # class x1 y1 x2 y2 x3 y3 x4 y4
        vals = (shape.corners() / norm).ravel()
    elif task == "segment":  # class x1 y1 ... xn yn: the outline as drawn
        vals = np.clip(shape.polygon() / norm, 0.0, 1.0).ravel()
    else:  # class cx cy w h [px py v]*K
        x1, y1, x2, y2 = shape.box()
        vals = np.array([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height])
        if task == "pose":
            kp = np.clip(shape.keypoints() / norm, 0.0, 1.0)
            vals = np.concatenate([np.clip(vals, 0.0, 1.0), np.concatenate([kp, np.full((3, 1), 2.0)], 1).ravel()])
    return " ".join([str(shape.cls)] + [f"{v:.6f}" for v in np.clip(vals, 0.0, 2.0)])


def box_line(cls: int, box: Sequence[float], width: int, height: int) -> str:
    """A detect label line ``class cx cy w h`` (normalised) for a box x1, y1, x2, y2 in pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    vals = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
    return " ".join([str(cls)] + [f"{v:.6f}" for v in vals])


def area(shape: Shape) -> float:
    """The shape's area in px^2."""
    s = shape.size
    return {"circle": math.pi * s * s / 4, "square": s * s, "triangle": math.sqrt(3) / 4 * s * s}[shape.name]


def mask(shape: Shape, width: int, height: int) -> np.ndarray:
    """The (height, width) uint8 mask (0/1) of the pixels :func:`draw` fills for ``shape``."""
    import cv2

    out = np.zeros((height, width), np.uint8)
    pts = np.round((shape.polygon() - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(out, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return out


def visible_box(shape: Shape, width: int, height: int) -> tuple[np.ndarray | None, float]:
    """The box of the pixels ``shape`` covers inside a ``width`` x ``height`` image, as :func:`draw` fills them
    (None when none), and the share of its area inside."""
    ys, xs = np.nonzero(mask(shape, width, height))
    if not len(xs):
        return None, 0.0
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float), len(xs) / area(shape)


def _distractor(rng: np.random.Generator, image: np.ndarray, cx: float, cy: float, size: float,
                texture: np.ndarray) -> None:
    """An unlabelled saturated object in place (BGR): a shaded irregular polygon, a textured blob or a shaded
    rounded box — what a photo's red tank or crate looks like to a shape detector, none of them a flat shape."""
    import cv2

    h, w = image.shape[:2]
    kind = int(rng.integers(0, 3))
    r = size / 2
    if kind == 2:  # rounded box, its sides 0.4-1.0 of each other
        bw, bh = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.4, 1.0)
        rad = min(bw, bh) * rng.uniform(0.2, 0.6)
        outline = np.zeros((h, w), np.uint8)
        x1, y1, x2, y2 = (int(round(v)) for v in (cx - bw, cy - bh, cx + bw, cy + bh))
        ir = int(rad)
        cv2.rectangle(outline, (x1 + ir, y1), (x2 - ir, y2), 1, -1)
        cv2.rectangle(outline, (x1, y1 + ir), (x2, y2 - ir), 1, -1)
        for px, py in ((x1 + ir, y1 + ir), (x2 - ir, y1 + ir), (x1 + ir, y2 - ir), (x2 - ir, y2 - ir)):
            cv2.circle(outline, (px, py), ir, 1, -1)
    else:  # irregular polygon: 5-11 vertices at random radii (kind 1 smooths it into a blob)
        n = int(rng.integers(5, 12))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = r * rng.uniform(0.45, 1.0, n)
        pts = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)
        outline = np.zeros((h, w), np.uint8)
        cv2.fillPoly(outline, [np.round(pts).astype(np.int32)], 1)
        if kind == 1:
            k = max(3, int(size / 6) | 1)
            outline = (cv2.GaussianBlur(outline.astype(np.float32), (k, k), 0) > 0.5).astype(np.uint8)
    region = outline.astype(bool)
    if not region.any():
        return
    color = np.asarray(_random_color(rng), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # shading: a highlight at a random spot falling off to 0.35-0.6 of the colour, as on a glossy curved part
    hx, hy = cx + rng.uniform(-0.6, 0.6) * r, cy + rng.uniform(-0.6, 0.6) * r
    dist = np.hypot(xx - hx, yy - hy) / max(r, 1.0)
    shade = np.clip(1.25 - rng.uniform(0.4, 0.65) * dist, 0.3, 1.25)
    tex = cv2.resize(texture, (w, h)).astype(np.float32)
    tex = tex.mean(2, keepdims=True) / max(float(tex.mean()), 1.0) if kind == 1 else 1.0
    value = np.clip(color * shade[..., None] * (0.6 + 0.4 * tex if kind == 1 else 1.0), 0, 255)
    image[region] = value[region].astype(np.uint8)


def demo_scene(seed: int, index: int, settings: dict, *, split: str = "train",
               photos: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image of a target with its own scenes (:data:`SCENES`): (BGR image, [(class, box x1 y1 x2 y2)])."""
    import cv2

    if photos is None:
        photos = {n: load_photo(n) for n in settings["photos"]}
    names = sorted(photos)
    rng = np.random.default_rng([seed, index, 1000, 0 if split == "train" else 1])
    photo = photos[names[int(rng.integers(0, len(names)))]]
    image = _crop(rng, photo, tuple(settings["crop"]))[..., ::-1].copy()  # RGB photo -> BGR frame
    if rng.random() < settings["recolor"]:  # the photo's objects in other hues, more saturated
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(0, 180))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1.0, 1.6), 0, 255)
        image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    h, w = image.shape[:2]
    if "flat" in settings and rng.random() < settings["flat"]:  # a flat colour field with the photo's texture
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        gray = (gray - gray.mean()) / (gray.std() + 1e-6)
        tone = np.clip(1 + rng.uniform(0.04, 0.2) * gray, 0.5, 1.5)[..., None]
        field = np.clip(np.asarray(_random_color(rng), np.float32) * tone, 0, 255).astype(np.uint8)
        if rng.random() < 0.5:  # inside a large ellipse, its edge in view
            inside = np.zeros((h, w), np.uint8)
            centre = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h))
            axes = (int(rng.uniform(0.5, 1.0) * w), int(rng.uniform(0.5, 1.0) * h))
            cv2.ellipse(inside, centre, axes, 0, 0, 360, 1, -1)
            field = np.where(inside[..., None] > 0, field, image)
        image = field
    short = min(h, w)
    lo, hi = settings["size"]
    placed: list[np.ndarray] = []  # boxes (visible parts) kept apart by 4 px

    def free(b: np.ndarray) -> bool:
        return all(b[2] + 4 < o[0] or o[2] + 4 < b[0] or b[3] + 4 < o[1] or o[3] + 4 < b[1] for o in placed)

    texture = _crop(rng, photo, (64, 160))
    for _ in range(int(rng.integers(settings["distractors"][0], settings["distractors"][1] + 1))):
        for _ in range(30):
            size = float(rng.uniform(lo, hi)) * short
            cx, cy = rng.uniform(0.3 * size, w - 0.3 * size), rng.uniform(0.3 * size, h - 0.3 * size)
            b = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
            if free(b):
                _distractor(rng, image, cx, cy, size, texture)
                placed.append(b)
                break
    labels: list[tuple[int, np.ndarray]] = []
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(settings["shapes"][0], settings["shapes"][1] + 1))):
        for _ in range(50):
            size = float(rng.uniform(lo, hi)) * short
            cls = int(rng.integers(0, len(CLASSES)))
            if rng.random() < settings["partial"]:  # the centre anywhere up to a quarter size outside
                cx, cy = rng.uniform(-0.25 * size, w + 0.25 * size), rng.uniform(-0.25 * size, h + 0.25 * size)
            else:
                m = 0.55 * size + 1
                cx, cy = rng.uniform(m, w - m), rng.uniform(m, h - m)
            cand = Shape(cls, float(cx), float(cy), size, 0.0, _random_color(rng))
            box, seen = visible_box(cand, w, h)
            if box is None or seen < settings["visible"] or not free(box):
                continue
            under = image[int(box[1]):int(box[3]), int(box[0]):int(box[2])].reshape(-1, 3).mean(0)
            for _ in range(50):  # a colour that stands out from what it covers, as on the test frames
                if np.abs(np.subtract(cand.color, under)).sum() >= 200:
                    break
                cand = Shape(cls, cand.cx, cand.cy, size, 0.0, _random_color(rng))
            shapes.append(cand)
            placed.append(box)
            labels.append((cls, box))
            break
    image = draw(image, shapes)
    if rng.random() < settings["stretch"]:  # anisotropic scaling; boxes scale with the image exactly
        f = math.exp(rng.uniform(-1, 1) * math.log(settings["max_stretch"]))
        fx, fy = (f, 1.0) if f >= 1 else (1.0, 1 / f)
        g = min(1.0, 800 / max(w * fx, h * fy))
        fx, fy = fx * g, fy * g
        nw, nh = max(1, round(w * fx)), max(1, round(h * fy))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if g < 1 else cv2.INTER_LINEAR)
        sx, sy = nw / w, nh / h
        labels = [(c, b * np.array([sx, sy, sx, sy])) for c, b in labels]
    return image, labels


def build_dataset(root: str | os.PathLike, task: str, *, n_train: int = DEFAULTS["n_train"],
                  n_val: int = DEFAULTS["n_val"], seed: int = DEFAULTS["seed"], scenes: dict | None = None) -> Path:
    """Path of ``data.yaml`` of a YOLO dataset for ``task`` written under ``root`` (deterministic).

    ``scenes``: the settings of :func:`demo_scene` (detect only; see :data:`SCENES`), else :func:`scene`'s.
    """
    import cv2

    if task not in TASKS:
        raise ValueError(f"task {task!r}; expected one of {', '.join(TASKS)}")
    if scenes is not None and task != "detect":
        raise ValueError(f"scenes of their own are for task 'detect', not {task!r}")
    root = Path(root)
    photos = {n: load_photo(n) for n in (scenes["photos"] if scenes else TRAIN_PHOTOS)}
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            if scenes is not None:
                image, labels = demo_scene(seed, i, scenes, split=split, photos=photos)
                h, w = image.shape[:2]
                lines = [box_line(c, b, w, h) for c, b in labels]
            else:
                _, image, shapes = scene(seed, i, task=task, split=split, photos=photos)
                h, w = image.shape[:2]
                lines = [label_line(s, w, h, task) for s in shapes]
            cv2.imwrite(str(root / "images" / split / f"{i:05d}.png"), image)
            (root / "labels" / split / f"{i:05d}.txt").write_text("".join(x + "\n" for x in lines))
    yaml = [f"path: {root.resolve()}", "train: images/train", "val: images/val",
            "names:"] + [f"  {i}: {n}" for i, n in enumerate(CLASSES)]
    if task == "pose":
        yaml += [f"kpt_shape: [{KPT_SHAPE[0]}, {KPT_SHAPE[1]}]"]
    (root / "data.yaml").write_text("\n".join(yaml) + "\n")
    return root / "data.yaml"


def default_cache_dir() -> Path:
    """The cache folder: ``$EDGEINFER_CACHE`` or ``~/.cache/edgeinfer``."""
    return Path(os.environ.get("EDGEINFER_CACHE") or Path.home() / ".cache" / "edgeinfer")


def recipe(target: str, *, epochs: int | None = None, imgsz: int = DEFAULTS["imgsz"],
           n_train: int = DEFAULTS["n_train"], n_val: int = DEFAULTS["n_val"], batch: int = DEFAULTS["batch"],
           seed: int = DEFAULTS["seed"]) -> dict:
    """Everything that decides the trained weights, as plain data (its hash is the cache key).

    ``epochs`` applies to ``target`` only; the target it starts from keeps its own default.
    """
    import importlib.metadata

    known = {**TARGETS, **DEMO_TARGETS}
    if target not in known:
        raise ValueError(f"target {target!r}; expected one of {', '.join(known)}")
    task, yaml, init, default_epochs = known[target]
    sizes = dict(imgsz=imgsz, n_train=n_train, n_val=n_val, batch=batch, seed=seed)
    rec = dict(target=target, task=task, model=yaml, epochs=epochs or default_epochs, **sizes,
               init=recipe(init, **sizes) if init else None, train_args=TRAIN_ARGS,
               ultralytics=importlib.metadata.version("ultralytics"), version=RECIPE_VERSION)
    if target in SCENES:  # its own scenes and dataset sizes (the target it starts from keeps the defaults)
        scenes = dict(SCENES[target])
        rec.update(n_train=scenes.pop("n_train"), n_val=scenes.pop("n_val"), scenes=scenes)
    return rec


def _key(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]


def _quiet_ultralytics():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")


def train(target: str, *, cache_dir: str | os.PathLike | None = None, epochs: int | None = None,
          imgsz: int = DEFAULTS["imgsz"], n_train: int = DEFAULTS["n_train"], n_val: int = DEFAULTS["n_val"],
          batch: int = DEFAULTS["batch"], seed: int = DEFAULTS["seed"],
          progress: Callable[[str], None] | None = None) -> Path:
    """Path of the trained ``best.pt`` for ``target`` (see TARGETS): from the cache, or trained now on CPU.

    Beside it, ``<same name>.json`` records the recipe, training seconds and Ultralytics' own validation
    metrics (mAP50, mAP50-95) on the validation images.
    """
    rec = recipe(target, epochs=epochs, imgsz=imgsz, n_train=n_train, n_val=n_val, batch=batch, seed=seed)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / "shapes"
    key = _key(rec)
    weights = folder / f"{target}-{key}.pt"
    if weights.exists():
        return weights
    say = progress or (lambda msg: None)
    start_from = None
    if rec["init"]:
        start_from = train(rec["init"]["target"], cache_dir=cache_dir, imgsz=imgsz, n_train=n_train, n_val=n_val,
                           batch=batch, seed=seed, progress=progress)
    _quiet_ultralytics()
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"{target}-{key}-", dir=folder) as tmp:
        tmp = Path(tmp)
        say(f"{target}: building {rec['n_train']}+{rec['n_val']} images")
        data = build_dataset(tmp / "data", rec["task"], n_train=rec["n_train"], n_val=rec["n_val"], seed=seed,
                             scenes=rec.get("scenes"))
        from ultralytics import YOLO

        model = YOLO(rec["model"], task=rec["task"])
        if start_from is not None:
            model.load(str(start_from))
        model.add_callback("on_train_epoch_end",
                           lambda tr: say(f"{target}: epoch {tr.epoch + 1}/{tr.epochs}"))
        extra = dict(fliplr=0.0) if rec["task"] == "pose" else {}
        start = time.perf_counter()
        model.train(data=str(data), epochs=rec["epochs"], imgsz=imgsz, batch=batch, seed=seed, deterministic=True,
                    device="cpu", workers=0, amp=False, plots=False, val=False,
                    project=str(tmp / "runs"), name="train", exist_ok=True, verbose=False, **rec["train_args"],
                    **extra)
        seconds = time.perf_counter() - start
        best = tmp / "runs" / "train" / "weights" / "best.pt"
        if not best.exists():
            best = best.with_name("last.pt")
        metrics = _box_metrics(model.trainer.metrics)
        say(f"{target}: trained in {seconds:.0f} s; " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        record = dict(recipe=rec, seconds=round(seconds, 1), seconds_with_data=round(time.perf_counter() - began, 1),
                      started_from=start_from.name if start_from else None, metrics=metrics)
        if weights.exists():  # another process trained the same recipe meanwhile: keep its file, users may hold it
            return weights
        for src, dst in ((None, weights.with_suffix(".json")), (best, weights)):
            part = tmp / (dst.name + ".part")
            if src is None:
                part.write_text(json.dumps(record, indent=2) + "\n")
            else:
                shutil.copyfile(src, part)
            os.replace(part, dst)  # atomic: a concurrent reader never sees half a file; the record lands first
    return weights


def _box_metrics(raw: dict) -> dict:
    """Ultralytics' validation dict reduced to mAP50 / mAP50-95 (boxes; pose keypoints and
    segment masks when present)."""
    out = {}
    for k, v in (raw or {}).items():
        if k.startswith("metrics/mAP50"):
            kind = k.split("(")[-1].rstrip(")") if "(" in k else "B"
            out[f"{'mAP50-95' if 'mAP50-95' in k else 'mAP50'}({kind})"] = round(float(v), 4)
    return out


def training_record(weights: str | os.PathLike) -> dict:
    """The JSON record :func:`train` wrote beside ``weights`` (recipe, seconds, metrics, weights it started from)."""
    return json.loads(Path(weights).with_suffix(".json").read_text())


def export(weights: str | os.PathLike, out_dir: str | os.PathLike, *, imgsz: int = DEFAULTS["imgsz"],
           variants: Iterable[str] | None = None, batch: int = 1) -> dict[str, Path]:
    """ONNX files by variant name (see VARIANTS), written by Ultralytics' own exporter into ``out_dir``.

    Default variants: raw, raw-dynamic and nms for a model without a one-to-one head; nmsfree and
    nmsfree-dynamic (and raw, the one-to-many head) for one with it (YOLO26 / YOLOv10).
    Files are named ``<weights stem>-<variant>.onnx``.
    """
    _quiet_ultralytics()
    from ultralytics import YOLO

    weights = Path(weights)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = YOLO(str(weights))
    one2one = getattr(model.model.model[-1], "one2one_cv2", None) is not None
    if variants is None:
        variants = ("raw", "nmsfree", "nmsfree-dynamic") if one2one else ("raw", "raw-dynamic", "nms")
    out = {}
    for name in variants:
        if name not in VARIANTS:
            raise ValueError(f"variant {name!r}; expected one of {', '.join(VARIANTS)}")
        if VARIANTS[name]["nms"] is False and not one2one:
            raise ValueError(f"variant {name!r} needs a one-to-one (NMS-free) head; {weights.name} has none. "
                             "Train target 'detect-nmsfree' (YOLO26) for it.")
        with tempfile.TemporaryDirectory() as tmp:
            # The exporter writes beside the weights: work on a copy so the cache stays untouched.
            src = Path(tmp) / weights.name
            shutil.copyfile(weights, src)
            args = dict(VARIANTS[name])
            if args["dynamic"]:
                args["batch"] = max(batch, 1)
            f = YOLO(str(src)).export(format="onnx", imgsz=imgsz, device="cpu", verbose=False, **args)
            dst = out_dir / f"{weights.stem}-{name}.onnx"
            shutil.move(str(f), dst)
            out[name] = dst
    return out


def describe_onnx(path: str | os.PathLike) -> dict:
    """Inputs and outputs (name, shape) of an ONNX file as ONNX Runtime sees them, and its metadata parsed."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = {}
    for k, v in sess.get_modelmeta().custom_metadata_map.items():
        try:
            meta[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            meta[k] = v
    return dict(inputs=[(i.name, list(i.shape)) for i in sess.get_inputs()],
                outputs=[(o.name, list(o.shape)) for o in sess.get_outputs()], metadata=meta)


@dataclass(frozen=True)
class TestFrame:
    """A real frame for parity checks: BGR uint8 image and the shapes drawn on it."""

    name: str
    image: np.ndarray
    shapes: tuple[Shape, ...]


#: name -> (width, height) of the test frames.
FRAME_SIZES = {"portrait": (360, 540), "landscape": (640, 400), "small": (180, 120), "1080p": (1920, 1080)}


def test_frames(task: str = "detect", *, imgsz: int = DEFAULTS["imgsz"], seed: int = 1234,
                sizes: dict[str, tuple[int, int]] | None = None) -> dict[str, TestFrame]:
    """Test frames by name (portrait, landscape, small, 1080p): shapes on held-out photos, deterministic.

    Shapes are sized so that, letterboxed to ``imgsz``, they span 30-80 px as in training; rotated for obb.
    ``sizes``: other frames, name -> (width, height), the k-th on the k-th held-out photo (the demo's video
    frames); default :data:`FRAME_SIZES`.
    """
    import cv2

    if task not in TASKS:
        raise ValueError(f"task {task!r}; expected one of {', '.join(TASKS)}")
    frames = {}
    for k, (name, (w, h)) in enumerate((sizes or FRAME_SIZES).items()):
        rng = np.random.default_rng([seed, k, TASKS.index(task)])
        photo = load_photo(HELDOUT_PHOTOS[k % len(HELDOUT_PHOTOS)])
        if photo.ndim == 2:  # the cameraman is grayscale
            photo = np.repeat(photo[..., None], 3, axis=2)
        ph, pw = photo.shape[:2]
        # the largest crop of the photo's aspect w:h, at a random place, resized to the frame
        f = min(pw / w, ph / h)
        cw, ch = int(w * f), int(h * f)
        x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        crop = cv2.resize(photo[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA if f > 1
                          else cv2.INTER_LINEAR)
        scale = max(w, h) / imgsz  # frame pixels per letterboxed pixel
        bgr = np.ascontiguousarray(crop[..., ::-1])
        shapes = random_shapes(rng, w, h, count=int(rng.integers(2, 5)), size_range=(30 * scale, 80 * scale),
                               rotate=task == "obb", background=bgr)
        frames[name] = TestFrame(name, draw(bgr, shapes), tuple(shapes))
    return frames


test_frames.__test__ = False  # a fixture-maker for pytest, not a test
TestFrame.__test__ = False
