"""A torchvision semantic segmenter trained here, on the coloured-shapes scenes (real photos behind them).

Every scene of :mod:`tests.material.shapes` comes with its per-pixel truth for free: the shapes are drawn with
their class id (1 circle, 2 square, 3 triangle; 0 background). A few hundred AdamW steps of torchvision's
``lraspp_mobilenet_v3_large`` (no pretrained weights: nothing is downloaded) give confident, varied class
maps -- real weights for parity figures, unlike a random initialisation whose maps are constant.

The weights are cached by a hash of the recipe (like the detectors), under ``$EDGEINFER_CACHE`` or
``~/.cache/edgeinfer``. The tests' cache (``tests/data/detectors``) holds this recipe's weights, committed in
float16 (6.6 MB; loaded back into float32), so CI does not train: training is not bit-reproducible across
machines' thread counts, and the tests' figures should not move with it. A changed recipe trains anew (300
steps: about 3 minutes on 2 quiet cores); commit its file.

What the committed model does on four held-out scenes (other photos behind the shapes): 83 % of the shape
pixels get the right class, foreground IoU 0.30 (it also marks some texture as shapes) -- material for
parity figures with confident, varied maps, not a good segmenter.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tests.material import shapes

LABELS = ("background",) + shapes.CLASSES
RECIPE = dict(arch="lraspp_mobilenet_v3_large", steps=300, batch=8, size=128, lr=3e-3, seed=0, n_scenes=160,
              version=2)
#: The evaluation transform the model is exported with: torchvision's preset, the shorter side to 128.
RESIZE = 128


def class_mask(hw: tuple[int, int], drawn: list[shapes.Shape]) -> np.ndarray:
    """(H, W) uint8 class ids of a scene, rasterised like :func:`tests.material.shapes.draw` fills the shapes."""
    import cv2

    mask = np.zeros(hw, np.uint8)
    for sh in drawn:
        pts = np.round((sh.polygon() - 0.5) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], int(sh.cls) + 1, lineType=cv2.LINE_8, shift=4)
    return mask


def _key() -> str:
    return hashlib.sha1(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]


def build(arch: str = RECIPE["arch"]) -> Any:
    import torchvision

    return getattr(torchvision.models.segmentation, arch)(weights=None, weights_backbone=None,
                                                          num_classes=len(LABELS))


def train(cache_dir: str | os.PathLike | None = None, *, progress: bool = True) -> Any:
    """The trained segmenter in eval mode, from the cache when this recipe was trained before."""
    import torch

    cache = Path(cache_dir) if cache_dir is not None else shapes.default_cache_dir()
    weights = cache / f"semseg-{_key()}.pt"
    model = build()
    if weights.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.eval()
    import cv2

    torch.manual_seed(RECIPE["seed"])
    photos = {n: shapes.load_photo(n) for n in shapes.TRAIN_PHOTOS}
    size = RECIPE["size"]
    xs, ys = [], []
    for i in range(RECIPE["n_scenes"]):
        _, img, drawn = shapes.scene(RECIPE["seed"], i, task="segment", photos=photos)
        mask = class_mask(img.shape[:2], drawn)
        xs.append(cv2.resize(img[..., ::-1], (size, size), interpolation=cv2.INTER_AREA))
        ys.append(cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    x_all = torch.from_numpy(((np.stack(xs) / 255.0 - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
    y_all = torch.from_numpy(np.stack(ys).astype(np.int64))
    weight = torch.tensor([0.3, 1.0, 1.0, 1.0])  # the background is most pixels
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"])
    gen = torch.Generator().manual_seed(RECIPE["seed"])
    model.train()
    steps = range(RECIPE["steps"])
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="training the segmenter", unit="step")
    for _ in steps:
        idx = torch.randint(0, len(x_all), (RECIPE["batch"],), generator=gen)
        x, y = x_all[idx], y_all[idx]
        if torch.rand(1, generator=gen).item() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = torch.nn.functional.cross_entropy(model(x)["out"], y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # torchvision's MobileNetV3 BatchNorm momentum is 0.01: after a short training the running statistics
    # lag far behind. Recompute them from the training scenes (no gradients) before evaluating.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for i in range(0, len(x_all), 16):
            model(x_all[i:i + 16])
    model.eval()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, weights)
    return model


def transform() -> Any:
    """The evaluation transform: torchvision's own ``SemanticSegmentation`` preset."""
    from torchvision.transforms._presets import SemanticSegmentation

    return SemanticSegmentation(resize_size=RESIZE)


def test_scenes(n: int = 4, seed: int = 99) -> list[tuple[np.ndarray, np.ndarray]]:
    """Held-out scenes of several sizes and aspect ratios: (BGR image, class mask)."""
    photos = {n_: shapes.load_photo(n_) for n_ in shapes.HELDOUT_PHOTOS}
    out = []
    for i in range(n):
        _, img, drawn = shapes.scene(seed, i, task="segment", split="val", photos=photos)
        if img.ndim == 2:  # a grey photo (skimage's camera): the frame a camera would give is still BGR
            import cv2

            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        out.append((img, class_mask(img.shape[:2], drawn)))
    return out
