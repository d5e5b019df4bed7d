"""Preprocessing parity: our OpenCV/numpy pixels against the training library's, on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2

from converters.transforms import _pil_pass_order, pixel_parity, spec_from_transform
from edgeinfer import ConversionError, RandomTransformError
from edgeinfer.pipeline import ops

PIL_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
               "box": Image.BOX, "hamming": Image.HAMMING, "lanczos": Image.LANCZOS}
# (out_w, out_h): upscale, mild and strong downscale, odd sizes, one axis only, and Pillow 13's
# vertical-first case (height shrinks more than twice the width).
SIZES = [(1000, 700), (449, 401), (224, 224), (37, 51), (512, 100), (600, 512), (301, 97), (7, 5)]
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.mark.parametrize("filt", sorted(PIL_FILTERS))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_resize_matches_pil_bit_exactly(filt, mode, astronaut):
    pil = Image.fromarray(astronaut).convert(mode)
    arr = np.asarray(pil) if mode == "RGB" else np.asarray(pil)[..., None]
    for ow, oh in SIZES:
        ref = np.asarray(pil.resize((ow, oh), PIL_FILTERS[filt]))
        params = {"rule": "exact", "size": [oh, ow], "interpolation": filt, "backend": "pil",
                  "pass_order": _pil_pass_order()}
        got = ops.resize(arr, params)
        got = got if mode == "RGB" else got[..., 0]
        assert got.shape == ref.shape
        diff = np.abs(got.astype(int) - ref.astype(int)).max()
        assert diff == 0, f"{filt} {mode} {ow}x{oh}: max diff {diff}"


def test_resize_window_equals_crop_of_full_resize(astronaut):
    frame = cv2.resize(astronaut, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    params = {"rule": "shorter", "size": 256, "interpolation": "bilinear", "backend": "pil",
              "pass_order": _pil_pass_order()}
    full = ops.resize(frame, params)
    top, left = ops.center_crop_window(*full.shape[:2], 224, 224)
    window = ops.resize(frame, params, window=(top, left, 224, 224))
    assert np.array_equal(window, full[top:top + 224, left:left + 224])


V1 = {
    "imagenet": T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(*IMAGENET)]),
    "bicubic_exact_size": T.Compose([T.Resize((200, 300), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor()]),
    "lanczos_crop": T.Compose([T.Resize(100, interpolation=T.InterpolationMode.LANCZOS), T.CenterCrop(90),
                               T.ToTensor()]),
    "box_hamming_nearest": T.Compose([T.Resize(80, interpolation=T.InterpolationMode.BOX),
                                      T.Resize((70, 60), interpolation=T.InterpolationMode.HAMMING),
                                      T.Resize(50, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(48),
                                      T.ToTensor()]),
    "max_size": T.Compose([T.Resize(100, max_size=120), T.CenterCrop(96), T.ToTensor()]),
    "crop_larger_pads": T.Compose([T.Resize(64), T.CenterCrop(128), T.ToTensor()]),
    "grayscale3": T.Compose([T.Resize(64), T.CenterCrop(64), T.Grayscale(3), T.ToTensor(), T.Normalize([.5] * 3, [.5] * 3)]),
    "grayscale1": T.Compose([T.Grayscale(1), T.Resize((40, 40)), T.ToTensor()]),
    "pad_constant": T.Compose([T.Resize((50, 60)), T.Pad(3, fill=7), T.ToTensor()]),
    "pad_reflect": T.Compose([T.Resize((50, 60)), T.Pad((2, 5), padding_mode="reflect"), T.ToTensor()]),
    "pil_to_tensor_convert": T.Compose([T.Resize(72), T.CenterCrop(64), T.PILToTensor(),
                                        T.ConvertImageDtype(torch.float32), T.Normalize(*IMAGENET)]),
    "tensor_resize_v1": T.Compose([T.PILToTensor(), T.Resize(90, antialias=True), T.CenterCrop(80),
                                   T.ConvertImageDtype(torch.float32)]),
}
V2 = {
    "pil_then_image": v2.Compose([v2.Resize(256), v2.CenterCrop(224), v2.ToImage(),
                                  v2.ToDtype(torch.float32, scale=True), v2.Normalize(*IMAGENET)]),
    "uint8_tensor_antialias": v2.Compose([v2.ToImage(), v2.Resize(256, antialias=True), v2.CenterCrop(224),
                                          v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]),
    "float_tensor_resize": v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Resize(128),
                                       v2.CenterCrop(112)]),
    "uint8_no_antialias": v2.Compose([v2.ToImage(), v2.Resize(100, antialias=False), v2.CenterCrop(96),
                                      v2.ToDtype(torch.float32, scale=True)]),
    "uint8_bicubic": v2.Compose([v2.ToImage(), v2.Resize(100, interpolation=v2.InterpolationMode.BICUBIC),
                                 v2.CenterCrop(96), v2.ToDtype(torch.float32, scale=True)]),
    "uint8_nearest_exact": v2.Compose([v2.ToImage(), v2.Resize(100, interpolation=v2.InterpolationMode.NEAREST_EXACT),
                                       v2.CenterCrop(96), v2.ToDtype(torch.float32, scale=True)]),
    "longer_side": v2.Compose([v2.ToImage(), v2.Resize(size=None, max_size=96), v2.CenterCrop(64),
                               v2.ToDtype(torch.float32, scale=False)]),
}


@pytest.mark.parametrize("name", sorted(V1) + sorted(V2))
def test_torchvision_eval_transforms_are_reproduced_within_one_level(name, photos):
    tf = V1.get(name) or V2[name]
    loader = "rgb"
    spec = spec_from_transform(tf, loader_color=loader)
    pil = [Image.fromarray(p) for p in photos.values()]
    assert pixel_parity(spec, tf, pil) <= 1.0
    if not any(s.params.get("backend") == "torch" for s in spec.steps):
        assert pixel_parity(spec, tf, pil) == 0.0  # PIL paths are bit-exact


def test_tensor_resize_is_recorded_as_torch_semantics():
    spec = spec_from_transform(V2["uint8_tensor_antialias"])
    resize = next(s for s in spec.steps if s.op == "resize")
    assert resize.params["backend"] == "torch" and resize.params["antialias"] is True
    pil_spec = spec_from_transform(V1["imagenet"])
    assert next(s for s in pil_spec.steps if s.op == "resize").params["backend"] == "pil"


TIMM_CONFIGS = [
    dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.875, crop_mode="center"),
    dict(input_size=(3, 256, 256), interpolation="bilinear", crop_pct=0.95, crop_mode="center"),
    dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=1.0, crop_mode="squash"),
    dict(input_size=(3, 288, 288), interpolation="bicubic", crop_pct=1.0, crop_mode="border"),
    dict(input_size=(3, 192, 256), interpolation="bilinear", crop_pct=0.9, crop_mode="center"),
    dict(input_size=(3, 160, 160), interpolation="nearest", crop_pct=0.875, crop_mode="center",
         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
]


@pytest.mark.parametrize("cfg", TIMM_CONFIGS, ids=lambda c: f"{c['crop_mode']}-{c['input_size'][1]}x{c['input_size'][2]}-{c['interpolation']}")
def test_timm_eval_transforms_are_reproduced_bit_exactly(cfg, photos):
    from timm.data import create_transform

    tf = create_transform(**cfg, is_training=False)
    spec = spec_from_transform(tf)
    assert spec.input.shape[2:] == cfg["input_size"][1:]
    assert pixel_parity(spec, tf, [Image.fromarray(p) for p in photos.values()]) == 0.0


def test_timm_model_data_config_converts():
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model("resnet18", pretrained=False)
    tf = create_transform(**resolve_data_config(model=model), is_training=False)
    assert spec_from_transform(tf).input.shape == (None, 3, 224, 224)


@pytest.mark.parametrize("tf, name", [
    (T.Compose([T.RandomResizedCrop(224), T.ToTensor()]), "RandomResizedCrop"),
    (T.Compose([T.Resize(256), T.ColorJitter(0.4), T.CenterCrop(224), T.ToTensor()]), "ColorJitter"),
    (v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)]), "RandomHorizontalFlip"),
    (T.Compose([T.RandomApply([T.Grayscale(3)]), T.ToTensor()]), "RandomApply"),
])
def test_random_augmentations_are_refused_by_name(tf, name):
    with pytest.raises(RandomTransformError, match=f"{name}.*eval transform"):
        spec_from_transform(tf)


def test_timm_training_transform_is_refused():
    from timm.data import create_transform

    with pytest.raises(RandomTransformError, match="eval transform"):
        spec_from_transform(create_transform(input_size=224, is_training=True))


def test_unknown_transform_is_refused_not_approximated():
    tf = T.Compose([T.Resize(64), T.Lambda(lambda x: x), T.ToTensor()])
    with pytest.raises(ConversionError, match="Lambda.*not a transform edgeinfer can reproduce"):
        spec_from_transform(tf)


def test_transform_without_fixed_size_is_refused():
    with pytest.raises(ConversionError, match="fixed size"):
        spec_from_transform(T.Compose([T.Resize(64), T.ToTensor()]))


def test_grayscale_loader_is_reproduced(photos):
    from skimage import data

    tf = T.Compose([T.Resize((32, 32), interpolation=T.InterpolationMode.BICUBIC), T.Grayscale(3), T.ToTensor()])
    spec = spec_from_transform(tf, loader_color="l")
    assert spec.decode.color == "l"
    assert pixel_parity(spec, tf, [Image.fromarray(data.camera()), Image.fromarray(data.coins())]) == 0.0


@pytest.mark.parametrize("filt", ["bilinear", "bicubic", "lanczos", "box"])
def test_numpy_fallback_gives_the_same_pixels_as_the_c_kernel(filt, astronaut, monkeypatch):
    from edgeinfer.pipeline import resample

    frame = cv2.resize(astronaut, (1280, 720), interpolation=cv2.INTER_CUBIC)
    params = {"rule": "shorter", "size": 200, "interpolation": filt, "backend": "pil", "pass_order": _pil_pass_order()}
    fast = ops.resize(frame, params)
    monkeypatch.setattr(resample, "_native", None)
    assert np.array_equal(ops.resize(frame, params), fast)
    gray = frame[..., :1].copy()
    assert np.array_equal(ops.resize(gray, params), np.asarray(Image.fromarray(gray[..., 0]).resize(
        fast.shape[1::-1], PIL_FILTERS[filt]))[..., None])


def _spec_of(*steps, hw):
    from edgeinfer import InputSpec, OutputSpec, Spec, Step

    return Spec(steps=tuple(Step(op, p) for op, p in steps), input=InputSpec("images", (None, 3, *hw)),
                output=OutputSpec("output0")).validate()


LETTERBOX = [
    dict(size=[640, 640]),
    dict(size=[320, 320], auto=True, stride=32),
    dict(size=[256, 384], scaleup=False),
    dict(size=[224, 224], center=False),
    dict(size=[160, 160], scale_fill=True),
]


@pytest.mark.parametrize("cfg", LETTERBOX, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_letterbox_matches_ultralytics(cfg, photos):
    from ultralytics.data.augment import LetterBox

    ref_tf = LetterBox(new_shape=tuple(cfg["size"]), auto=cfg.get("auto", False), scale_fill=cfg.get("scale_fill", False),
                       scaleup=cfg.get("scaleup", True), center=cfg.get("center", True), stride=cfg.get("stride", 32))
    for rgb in photos.values():
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        ref = ref_tf(image=bgr)[..., ::-1]  # Ultralytics letterboxes the BGR frame, then flips to RGB
        h, w = ref.shape[:2]  # with auto=True the padded size depends on the image
        spec = _spec_of(("letterbox", dict(cfg)), ("to_float", {"scale": "none"}), hw=(h, w))
        from edgeinfer import Preprocessor

        got = Preprocessor(spec)(bgr)
        assert got.shape == (3, h, w)
        assert np.array_equal(got.transpose(1, 2, 0).astype(np.uint8), ref)


@pytest.mark.parametrize("interp", sorted(ops.CV2_FLAGS))
def test_opencv_backend_is_the_cv2_call(interp, photos):
    from edgeinfer import Preprocessor

    rgb = photos["chelsea"]
    spec = _spec_of(("resize", {"rule": "exact", "size": [123, 201], "interpolation": interp, "backend": "opencv"}),
                    ("to_float", {"scale": "none"}), hw=(123, 201))
    ref = cv2.resize(rgb, (201, 123), interpolation=ops.CV2_FLAGS[interp])
    assert np.array_equal(Preprocessor(spec)(rgb, color="rgb").transpose(1, 2, 0), ref.astype(np.float32))


def _timm_distinct_configs() -> dict:
    import timm
    from timm.data import resolve_data_config

    configs: dict = {}
    for name in timm.list_pretrained():
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            continue
        dc = resolve_data_config(pretrained_cfg=cfg.to_dict())
        key = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in dc.items()))
        configs.setdefault(key, name)
    return configs


@pytest.mark.slow
def test_every_distinct_timm_pretrained_config_converts_bit_exactly(photos):
    from timm.data import create_transform

    configs = _timm_distinct_configs()
    assert len(configs) >= 150  # 173 in timm 1.0.31, from 1,826 pretrained models
    pil = [Image.fromarray(photos["chelsea"])]
    worst = {}
    for key, name in configs.items():
        tf = create_transform(**dict(key), is_training=False)
        worst[name] = pixel_parity(spec_from_transform(tf), tf, pil)
    assert max(worst.values()) == 0.0, {k: v for k, v in worst.items() if v}


def test_fast_mode_costs_at_most_half_a_level_on_average(astronaut):
    from edgeinfer import Preprocessor

    tf = V1["imagenet"]
    spec = spec_from_transform(tf)
    frame = cv2.resize(astronaut, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    ref = tf(Image.fromarray(frame)).numpy()
    fast = Preprocessor(spec, mode="fast")(frame, color="rgb")
    levels = np.abs(ref - fast) * 0.229 * 255
    assert 0 < levels.mean() <= 0.5 and levels.max() <= 16
    assert np.array_equal(Preprocessor(spec)(frame, color="rgb"), ref)  # exact stays exact


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("name", ["imagenet", "grayscale3", "pad_constant", "uint8_tensor_antialias",
                                  "float_tensor_resize", "uint8_nearest_exact"])
def test_every_input_layout_gives_the_pixels_of_the_rgb_array(mode, name, astronaut, tmp_path):
    """BGR frames, flipped views, BGRA/RGBA, grayscale and files run in their own memory layout
    (no full-frame flip or copy); the result must be that of the plain RGB array, in both modes."""
    from edgeinfer import Preprocessor

    pre = Preprocessor(spec_from_transform(V1.get(name) or V2[name], check=False), mode=mode)
    rgb = cv2.resize(astronaut, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    ref = pre(rgb, color="rgb")
    alpha = np.full(rgb.shape[:2] + (1,), 9, np.uint8)
    cv2.imwrite(str(tmp_path / "f.png"), bgr)
    for image, color in [(bgr, "bgr"), (bgr[..., ::-1], "rgb"), (rgb[..., ::-1], "bgr"),
                         (np.concatenate([bgr, alpha], 2), "bgr"), (np.concatenate([rgb, alpha], 2), "rgb"),
                         (tmp_path / "f.png", "bgr"), ((tmp_path / "f.png").read_bytes(), "bgr")]:
        assert np.array_equal(pre(image, color=color), ref)
    gray = rgb[..., 1].copy()
    as_rgb = np.repeat(gray[..., None], 3, axis=2)
    assert np.array_equal(pre(gray), pre(as_rgb, color="rgb"))
    assert np.array_equal(pre(gray[..., None]), pre(as_rgb, color="rgb"))
    batch = pre.batch([bgr, rgb[..., ::-1]])
    assert batch.shape == (2,) + ref.shape and np.array_equal(batch[0], ref) and np.array_equal(batch[1], ref)


def test_grayscale_loader_takes_bgr_frames_without_flipping_them(astronaut, monkeypatch):
    from edgeinfer import Preprocessor

    tf = T.Compose([T.Resize(64), T.CenterCrop(56), T.ToTensor()])
    pre = Preprocessor(spec_from_transform(tf, loader_color="l", check=False))
    ref = tf(Image.fromarray(astronaut).convert("L")).numpy()
    assert np.array_equal(pre(np.ascontiguousarray(astronaut[..., ::-1])), ref)
    assert np.array_equal(pre(astronaut, color="rgb"), ref)
    bgra = np.concatenate([astronaut[..., ::-1], np.full(astronaut.shape[:2] + (1,), 200, np.uint8)], 2)
    assert np.array_equal(pre(bgra), ref)
    from edgeinfer.pipeline import resample

    noise = np.random.default_rng(0).integers(0, 256, (67, 45, 3), dtype=np.uint8)  # every luma rounding case
    want = np.asarray(Image.fromarray(noise).convert("L"))[..., None]
    assert np.array_equal(ops.pil_luma(np.ascontiguousarray(noise[..., ::-1]), (2, 1, 0)), want)
    monkeypatch.setattr(resample, "_native", None)  # the numpy path computes the same
    assert np.array_equal(ops.pil_luma(np.ascontiguousarray(noise[..., ::-1]), (2, 1, 0)), want)
    assert np.array_equal(pre(np.ascontiguousarray(astronaut[..., ::-1])), ref)


def test_unknown_preprocess_mode_is_refused():
    from edgeinfer import Preprocessor, SpecError

    with pytest.raises(SpecError, match="exact.*fast"):
        Preprocessor(spec_from_transform(V1["imagenet"]), mode="turbo")


def test_c_kernel_checks_its_inputs():
    from edgeinfer.pipeline import resample

    if not resample.native_available():
        pytest.skip("C accelerator not built on this machine")
    img = np.zeros((4, 4, 3), np.uint8)
    out = np.zeros((2, 4, 3), np.uint8)
    idx = np.array([[0, 9], [1, 2]], np.int32)
    with pytest.raises(ValueError, match="out of range"):
        resample._native.rows(img, out, idx, np.ones((2, 2), np.int32), 22)
    with pytest.raises(ValueError, match="contiguous rows"):
        resample._native.rows(img[:, ::2], out, idx % 2, np.ones((2, 2), np.int32), 22)


@pytest.mark.parametrize("mode, antialias", [("bilinear", True), ("bilinear", False), ("bicubic", True),
                                             ("bicubic", False), ("lanczos", True)])  # lanczos needs antialias
@pytest.mark.parametrize("size_crop", [(100, 96), (256, 224), (700, 640)])
def test_torch_uint8_tensor_resize_is_bit_exact(mode, antialias, size_crop, photos, astronaut):
    m = v2.InterpolationMode(mode)
    tf = v2.Compose([v2.ToImage(), v2.Resize(size_crop[0], interpolation=m, antialias=antialias),
                     v2.CenterCrop(size_crop[1]), v2.ToDtype(torch.float32, scale=True)])
    frame = cv2.resize(astronaut, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    images = [Image.fromarray(p) for p in photos.values()] + [Image.fromarray(frame)]
    assert pixel_parity(spec_from_transform(tf), tf, images) == 0.0


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [True, False])
def test_float_tensor_and_v1_tensor_resizes_stay_within_one_level(mode, antialias, photos):
    m = v2.InterpolationMode(mode)
    images = [Image.fromarray(p) for p in photos.values()]
    as_float = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                           v2.Resize(90, interpolation=m, antialias=antialias), v2.CenterCrop(80)])
    assert pixel_parity(spec_from_transform(as_float), as_float, images) <= 0.01  # float32 rounding only
    v1 = T.Compose([T.PILToTensor(), T.Resize(90, interpolation=m, antialias=antialias), T.CenterCrop(80),
                    T.ConvertImageDtype(torch.float32)])
    spec = spec_from_transform(v1)
    assert next(s for s in spec.steps if s.op == "resize").params["uint8_arithmetic"] == "float_round"
    assert pixel_parity(spec, v1, images) <= 1.0
