"""Photo classifiers trained here on real photos ("which photo is this?"), and camera-like crops of them.

Real weights with varied, confident outputs for parity tests (shared/DATA.md); seconds of CPU each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_photo_classifier(arch: str, photos: list[np.ndarray], *, steps: int = 40, size: int = 64, seed: int = 0):
    """A "which photo is this?" classifier: real weights, varied confident outputs (see shared/DATA.md)."""
    import torch
    import torchvision
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(photos))
    aug = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(size, scale=(0.3, 1.0), antialias=True),
                      v2.RandomHorizontalFlip(), v2.ColorJitter(0.2, 0.2, 0.2), v2.ToDtype(torch.float32, scale=True),
                      v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.arange(len(photos))
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(photos), (16,))
        x = torch.stack([aug(photos[i]) for i in idx.tolist()])
        loss = torch.nn.functional.cross_entropy(model(x), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    # BatchNorm running statistics lag after a short training (mobilenet_v3 uses momentum 0.01):
    # recompute them so eval-mode outputs are as varied as the weights allow.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        for _ in range(4):
            model(torch.stack([aug(p) for p in photos]))
    return model.eval()


def photo_crops(folder: Path, photos: dict[str, np.ndarray], *, per_photo: int = 4, seed: int = 0) -> Path:
    """Write random square crops of each photo as PNG files (what a camera sees of the same scenes)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, img in photos.items():
        for j in range(per_photo):
            h, w = img.shape[:2]
            s = int(min(h, w) * rng.uniform(0.6, 1.0))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            cv2.imwrite(str(folder / f"{name}_{j}.png"), np.ascontiguousarray(img[y:y + s, x:x + s, ::-1]))
    return folder
