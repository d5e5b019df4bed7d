"""Shared fixtures: real photos, and real architectures trained here and exported once per session."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

SKIMAGE_RGB = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def _skimage_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def _sklearn_dir() -> Path:
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "images"


@pytest.fixture(scope="session")
def photo_files() -> list[Path]:
    """Real photo files on disk: JPEG and PNG, from scikit-image and scikit-learn."""
    sk = _skimage_dir()
    files = [sk / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg",
                              "motorcycle_left.png", "hubble_deep_field.jpg")]
    files += [_sklearn_dir() / "china.jpg", _sklearn_dir() / "flower.jpg"]
    return [f for f in files if f.exists()]


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real RGB photos as uint8 arrays, by name."""
    from skimage import data

    return {name: getattr(data, name)() for name in SKIMAGE_RGB}


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


@pytest.fixture(scope="session")
def imagenet_transform():
    from converters.zoo import imagenet_eval_transform

    return imagenet_eval_transform()


@pytest.fixture(scope="session")
def exported(tmp_path_factory, photos, imagenet_transform):
    """Exported photo classifiers keyed by architecture: (torch model, onnx path, ExportReport)."""
    import converters

    out = {}
    names = list(photos)
    for arch in ("resnet18", "mobilenet_v3_small"):
        model = train_photo_classifier(arch, [photos[n] for n in names])
        path = tmp_path_factory.mktemp(arch) / f"{arch}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = converters.export(model, path, transform=imagenet_transform, labels=names,
                                       images=list(photos.values()))
        out[arch] = (model, path, report)
    return out
