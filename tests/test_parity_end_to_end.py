"""The promise of the product: the device predicts what torch predicted, from the raw image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import edgeinfer

pytestmark = pytest.mark.slow


def _torch_probs(model, transform, pil_images):
    import torch

    with torch.no_grad():
        return torch.softmax(model(torch.stack([transform(im) for im in pil_images])), dim=1).numpy()


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_predict_matches_torch_with_its_own_transform_on_photo_files(arch, exported, photo_files, imagenet_transform):
    model, path, _ = exported[arch]
    deployed = edgeinfer.load(path)
    pil = [Image.open(f).convert("RGB") for f in photo_files]
    ref = _torch_probs(model, imagenet_transform, pil)
    got = np.stack([deployed.predict(f).scores for f in photo_files])
    assert np.max(np.abs(ref - got)) <= 1e-4
    assert np.array_equal(ref.argmax(1), got.argmax(1))
    # the outputs vary across images, so agreement above is not agreement on a constant
    assert np.std(ref, axis=0).max() > 0.05


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_predict_on_opencv_frames_matches_torch_on_pil_images(arch, exported, photos, imagenet_transform):
    model, path, _ = exported[arch]
    deployed = edgeinfer.load(path)
    frames = [np.ascontiguousarray(p[..., ::-1]) for p in photos.values()]  # OpenCV frames are BGR
    ref = _torch_probs(model, imagenet_transform, [Image.fromarray(p) for p in photos.values()])
    got = np.stack([p.scores for p in deployed.predict_batch(frames)])
    assert np.max(np.abs(ref - got)) <= 1e-4
    assert np.array_equal(ref.argmax(1), got.argmax(1))


def test_export_report_measures_parity(exported):
    for arch, (_, _, report) in exported.items():
        assert report.export_top1_agreement == 1.0 and report.deploy_top1_agreement == 1.0, arch
        assert report.export_max_abs_diff < 1e-4 and report.deploy_max_abs_diff < 1e-4, arch
        assert report.spec.input.shape == (None, 3, 224, 224)


def test_self_test_vector_reproduces_on_this_device(exported):
    result = edgeinfer.load(exported["resnet18"][1]).self_test()
    assert result.passed and result.max_abs_diff <= result.atol


def test_batch_and_single_predictions_agree(exported, photos):
    deployed = edgeinfer.load(exported["resnet18"][1])
    frames = list(photos.values())
    batch = deployed.predict_batch(frames, color="rgb", top_k=3)
    for frame, b in zip(frames, batch):
        single = deployed.predict(frame, color="rgb", top_k=3)
        np.testing.assert_allclose(single.scores, b.scores, atol=1e-6)
        assert [i for i, _, _ in single.top_k] == [i for i, _, _ in b.top_k]
    assert batch[0].to_dict()["top_k"][0]["label"] == deployed.labels[batch[0].index]
