"""Shared fixtures: real photos, and real architectures trained here and exported once per session."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.material.photos import train_photo_classifier

# The shape detectors tests.material.shapes trains (about 22 minutes of CPU for all four) are committed here,
# keyed by their recipe's hash: the tests read them instead of training. A changed recipe trains anew into
# this folder; commit the new .pt and .json files.
DETECTORS = Path(__file__).with_name("data") / "detectors"
os.environ.setdefault("EDGEINFER_CACHE", str(DETECTORS))

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


def edit_spec(src, dst, edit):
    """Copy a model with its spec JSON changed by ``edit`` (bypassing validation: to inject faults)."""
    import json

    import onnx

    proto = onnx.load(str(src))
    meta = {p.key: p for p in proto.metadata_props}
    spec = json.loads(meta["edgeinfer.spec"].value)
    edit(spec)
    meta["edgeinfer.spec"].value = json.dumps(spec)
    onnx.save(proto, str(dst))
    return dst


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
