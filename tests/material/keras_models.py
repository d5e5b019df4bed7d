"""Keras models trained here, exported with Keras's own ONNX exporter, and their Keras reference.

One model per way a Keras user preprocesses (the ``MODES``):

========  ===========================================================  ==========================================
mode      architecture (``weights=None``, trained here)                 preprocessing the model expects
========  ===========================================================  ==========================================
caffe     ResNet v1 (keras.applications' ``ResNet`` builder, 3 small    ``preprocess_input(mode="caffe")``: RGB->BGR,
          bottleneck stacks; the code ResNet50 is built with)          minus the ImageNet mean in BGR
                                                                        (103.939, 116.779, 123.68), no scaling
tf        ``keras.applications.MobileNetV2(alpha=0.35)``                ``mode="tf"``: x / 127.5 - 1
torch     DenseNet (keras.applications' ``DenseNet`` builder, blocks    ``mode="torch"``: x / 255, minus mean
          [1, 1, 1, 1]; the code DenseNet121 is built with)            (0.485, 0.456, 0.406), divided by std
                                                                        (0.229, 0.224, 0.225), RGB
none      ``keras.applications.MobileNetV3Small(alpha=0.5,              nothing: the graph starts with
          include_preprocessing=True, include_top=False,                ``Rescaling(1/127.5, offset=-1)``; it takes
          pooling="avg")`` + ``Dense(10, softmax)``                     float RGB 0-255 (``mobilenet_v3.
                                                                        preprocess_input`` is the identity)
========  ===========================================================  ==========================================

Every model takes NHWC float32 RGB (``(batch, H, W, 3)``, batch dynamic) and returns softmax
probabilities over the ten photos of :data:`PHOTOS` (the "which photo is this?" task of
../shared/DATA.md): trained ``STEPS`` AdamW steps (label smoothing 0.3) on random resized crops, flips
and brightness/contrast jitter of each photo, then the BatchNormalization statistics recomputed on the full
photos and crops (Keras MobileNets use momentum 0.999: after a short training the moving statistics would
make the outputs nearly constant). On the ten full photos through ``load_img`` (nearest) all four models
are right 10/10 with top probabilities 0.40-0.93 (committed models, see each ``.json`` record).

:func:`build` returns ``(onnx_path, reference_fn, meta)``; the reference is what a Keras user runs::

    img = keras.utils.load_img(path, target_size=(h, w), interpolation=...)   # PIL
    x = keras.utils.img_to_array(img)[None]                                   # float32 HWC, RGB 0-255
    x = keras.applications.imagenet_utils.preprocess_input(x, mode=mode)      # not for mode "none"
    model.predict(x)                                                          # probabilities

Exports and trained weights are cached by a hash of the recipe under ``$EDGEINFER_CACHE/keras`` (or
``~/.cache/edgeinfer/keras``); the committed ones in ``tests/data/keras/`` are found first, so the tests
never train. A changed recipe trains anew into the cache; copy the new files there to commit them.

What Keras does to image sizes (read in keras 3.15 source, ``keras/src/utils/image_utils.py`` and
``keras/src/utils/image_dataset_utils.py``):

- ``keras.utils.load_img(path, color_mode="rgb", target_size=None, interpolation="nearest",
  keep_aspect_ratio=False)``: ``PIL.Image.open`` on the file's bytes, then ``img.convert("RGB")`` unless the
  mode is already RGB (so PIL's conversion rules decide palette, RGBA, 16-bit, CMYK pixels; EXIF orientation
  is ignored, as PIL's ``open`` does). ``target_size`` is ``(height, width)``; when the image's size differs
  it calls ``img.resize((width, height), resample)`` on the whole image, stretching it (no crop, the aspect
  ratio is not kept), with ``interpolation`` mapped to PIL as ``"nearest"`` -> ``Resampling.NEAREST``,
  ``"bilinear"`` -> ``BILINEAR``, ``"bicubic"`` -> ``BICUBIC``, ``"hamming"`` -> ``HAMMING``, ``"box"``
  -> ``BOX``, ``"lanczos"`` -> ``LANCZOS`` (PIL antialiases every filter but nearest when shrinking). With
  ``keep_aspect_ratio=True`` it first centre-crops to the target's aspect ratio, in integers:
  ``crop_h = min(h, w * th // tw)``, ``crop_w = min(w, h * tw // th)``, offsets ``(h - crop_h) // 2`` and
  ``(w - crop_w) // 2``, passed as ``resize(..., box=crop_box)``. ``color_mode="grayscale"`` keeps
  ``L``, ``I;16`` and ``I`` images as they are (16-bit values unscaled) and ``convert("L")``s the rest.
  ``img_to_array`` is ``np.asarray(img, dtype="float32")``: no rounding, no scaling.
- ``keras.utils.image_dataset_from_directory(..., interpolation="bilinear", crop_to_aspect_ratio=False,
  pad_to_aspect_ratio=False, format="tf")`` needs TensorFlow for its default ``format="tf"``:
  ``tf.io.read_file`` + ``tf.image.decode_image(channels=3, expand_animations=False)`` (TensorFlow's own
  decoders, not PIL: for JPEG ``decode_jpeg`` with ``dct_method=""``, documented as "a system-specific
  default", and ``fancy_upscaling=True``; no EXIF rotation), then ``tf.image.resize(img, image_size,
  method=interpolation)`` with its default ``antialias=False``: half-pixel centres, no antialiasing when
  shrinking, computed in float32 and **not rounded** (the batches hold values such as 127.25). Methods:
  bilinear, nearest, bicubic, area, lanczos3, lanczos5, gaussian, mitchellcubic. ``crop_to_aspect_ratio=True``
  centre-crops first with ``smart_resize`` (``crop_h = int(w * th / tw)``, offsets truncated);
  ``pad_to_aspect_ratio=True`` uses ``tf.image.resize_with_pad`` (zero padding). With ``format="grain"`` (no
  TensorFlow) it decodes with PIL (``convert("RGB")`` as above, but ``Image.open(path)`` directly) and
  resizes with ``keras.ops.image.resize`` on float32, which on the torch backend is
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)`` (``"nearest"``
  -> ``"nearest-exact"``; lanczos3/5 unsupported): again half-pixel, not antialiased, not rounded. Neither
  is PIL's (antialiased, rounded to uint8) resize: a spec reproducing ``image_dataset_from_directory`` needs
  a float, non-antialiased resize, and for ``format="tf"`` TensorFlow's JPEG decoder settings as well
  (TensorFlow is not installed here, so none of this was compared against it).

Needs keras (3.x) with the torch backend (``KERAS_BACKEND=torch``, set here before keras is imported),
torch, onnx, onnxruntime, pillow, and scikit-image + scikit-learn for the photos.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

MODES = ("caffe", "tf", "torch", "none")
#: The ten photo classes: (label, file under scikit-image's data folder or scikit-learn's images folder).
PHOTOS = (("astronaut", "skimage/astronaut.png"), ("chelsea", "skimage/chelsea.png"),
          ("coffee", "skimage/coffee.png"), ("rocket", "skimage/rocket.jpg"),
          ("hubble_deep_field", "skimage/hubble_deep_field.jpg"), ("ihc", "skimage/ihc.png"),
          ("motorcycle_left", "skimage/motorcycle_left.png"), ("retina", "skimage/retina.jpg"),
          ("china", "sklearn/china.jpg"), ("flower", "sklearn/flower.jpg"))
LABELS = tuple(name for name, _ in PHOTOS)
#: Input size (height, width) per mode: not all square, so a swapped height and width shows.
SIZES = {"caffe": (64, 64), "tf": (64, 80), "torch": (72, 56), "none": (64, 80)}
STEPS = 100
#: Label smoothing keeps the probabilities off 0 and 1 (about 0.7-0.9 for the right photo), so a parity
#: check in probabilities stays sensitive to small preprocessing differences.
LABEL_SMOOTHING = 0.3
BATCH = 32
#: Bumped whenever the recipe changes in a way the recipe dict does not show.
RECIPE_VERSION = 1
COMMITTED = Path(__file__).resolve().parents[1] / "data" / "keras"
PIL_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "hamming", "box", "lanczos")


def _keras():
    """Import keras on the torch backend (the only one installed here)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"tests.material.keras_models needs KERAS_BACKEND=torch; keras runs on "
                           f"{keras.backend.backend()!r} (set the variable before importing keras).")
    return keras


def photo_paths() -> list[Path]:
    """The ten photo files of :data:`PHOTOS`, in label order (real JPEG and PNG files)."""
    import skimage
    import sklearn

    roots = {"skimage": Path(skimage.__file__).parent / "data",
             "sklearn": Path(sklearn.__file__).parent / "datasets" / "images"}
    out = []
    for _, rel in PHOTOS:
        pkg, name = rel.split("/")
        out.append(roots[pkg] / name)
    return out


def recipe(mode: str) -> dict:
    """Everything that decides the trained weights, as plain data (its hash is the cache key)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}; expected one of {', '.join(MODES)}")
    return dict(mode=mode, arch=_ARCHS[mode][0], size=list(SIZES[mode]), labels=list(LABELS), steps=STEPS,
                batch=BATCH, optimizer="AdamW", lr=2e-3, label_smoothing=LABEL_SMOOTHING, seed=0, bn_recalibration=8,
                version=RECIPE_VERSION)


def _key(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """The cache folder: ``$EDGEINFER_CACHE/keras`` or ``~/.cache/edgeinfer/keras``."""
    return Path(os.environ.get("EDGEINFER_CACHE") or Path.home() / ".cache" / "edgeinfer") / "keras"


def build(mode: str, *, interpolation: str = "nearest", cache_dir: str | os.PathLike | None = None,
          progress: Callable[[str], None] | None = None) -> tuple[Path, Callable, dict]:
    """``(onnx_path, reference_fn, meta)`` for the Keras model of ``mode`` (see the module docstring).

    ``reference_fn(paths) -> (N, 10) float32`` is Keras's own ``load_img(target_size, interpolation)`` +
    ``img_to_array`` + ``preprocess_input(mode)`` + ``model.predict`` on image files. ``meta`` holds
    ``mode``, ``size`` (height, width), ``interpolation``, ``labels``, ``layout`` ("NHWC"), ``input`` and
    ``output`` names, ``arch``, ``recipe``, and what training measured (``record``).
    """
    if interpolation not in PIL_INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r}; load_img accepts {', '.join(PIL_INTERPOLATIONS)}")
    onnx_path, weights_path, record = _artifacts(mode, cache_dir=cache_dir, progress=progress)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    size = tuple(SIZES[mode])
    meta = dict(mode=mode, size=size, interpolation=interpolation, labels=list(LABELS), layout="NHWC",
                input=sess.get_inputs()[0].name, output=sess.get_outputs()[0].name,
                input_shape=list(sess.get_inputs()[0].shape), arch=_ARCHS[mode][0], recipe=record["recipe"],
                record=record, weights=str(weights_path), output_kind="probabilities")
    return onnx_path, reference(keras_model(mode, weights_path), mode, size, interpolation), meta


def keras_model(mode: str, weights_path: str | os.PathLike):
    """The Keras model of ``mode`` with the trained weights (a ``.weights.npz`` of ``model.get_weights()``)."""
    _keras()
    model = _ARCHS[mode][1](SIZES[mode], len(LABELS))
    with np.load(weights_path) as npz:
        model.set_weights([npz[f"arr_{i}"] for i in range(len(npz.files))])
    return model


def reference(model, mode: str, size: tuple[int, int],
              interpolation: str = "nearest") -> Callable[[Sequence[str | os.PathLike]], np.ndarray]:
    """A function from image files to ``model``'s probabilities, the way a Keras user gets them."""
    keras = _keras()
    from keras.applications import imagenet_utils

    def reference_fn(paths: Sequence[str | os.PathLike]) -> np.ndarray:
        arrays = [keras.utils.img_to_array(keras.utils.load_img(str(p), target_size=size,
                                                                interpolation=interpolation)) for p in paths]
        x = np.stack(arrays)
        if mode != "none":
            x = imagenet_utils.preprocess_input(x, mode=mode)
        return np.asarray(model.predict(x, verbose=0), dtype=np.float32)

    reference_fn.model = model
    return reference_fn


def _artifacts(mode: str, *, cache_dir=None, progress=None) -> tuple[Path, Path, dict]:
    rec = recipe(mode)
    stem = f"{mode}-{_key(rec)}"
    folders = [COMMITTED, Path(cache_dir) / "keras" if cache_dir is not None else default_cache_dir()]
    for folder in folders:
        files = [folder / f"{stem}{ext}" for ext in (".onnx", ".weights.npz", ".json")]
        if all(f.exists() for f in files):
            return files[0], files[1], json.loads(files[2].read_text())
    folder = folders[1]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{stem}-", dir=folder) as tmp:
        tmp = Path(tmp)
        record = _train_and_export(rec, tmp, stem, progress or (lambda msg: None))
        for ext in (".weights.npz", ".onnx", ".json"):  # the record lands last: its presence means the rest is there
            dst = folder / f"{stem}{ext}"
            part = tmp / (dst.name + ".part")
            if ext == ".json":
                part.write_text(json.dumps(record, indent=2) + "\n")
            else:
                shutil.copyfile(tmp / f"{stem}{ext}", part)
            os.replace(part, dst)
    return folder / f"{stem}.onnx", folder / f"{stem}.weights.npz", record


# -- architectures ---------------------------------------------------------------------------------------

def _resnet(size, classes):
    from keras.src.applications import resnet

    def stack_fn(x):
        x = resnet.stack_residual_blocks_v1(x, 16, 1, stride1=1, name="conv2")
        x = resnet.stack_residual_blocks_v1(x, 32, 1, name="conv3")
        return resnet.stack_residual_blocks_v1(x, 64, 1, name="conv4")

    return resnet.ResNet(stack_fn, False, True, weights=None, input_shape=(*size, 3), classes=classes,
                         name="resnet_small")


def _densenet(size, classes):
    from keras.src.applications import densenet

    return densenet.DenseNet([1, 1, 1, 1], weights=None, input_shape=(*size, 3), classes=classes,
                             name="densenet_small")


def _mobilenet_v2(size, classes):
    keras = _keras()
    return keras.applications.MobileNetV2(input_shape=(*size, 3), alpha=0.35, weights=None, classes=classes)


def _mobilenet_v3(size, classes):
    keras = _keras()
    base = keras.applications.MobileNetV3Small(input_shape=(*size, 3), alpha=0.5, weights=None, include_top=False,
                                               pooling="avg", include_preprocessing=True)
    out = keras.layers.Dense(classes, activation="softmax", name="predictions")(base.output)
    return keras.Model(base.input, out, name="mobilenetv3small_photos")


_ARCHS = {"caffe": ("keras.applications ResNet v1 (3 stacks of 1 bottleneck: 16, 32, 64)", _resnet),
          "tf": ("keras.applications.MobileNetV2(alpha=0.35)", _mobilenet_v2),
          "torch": ("keras.applications DenseNet(blocks=[1, 1, 1, 1])", _densenet),
          "none": ("keras.applications.MobileNetV3Small(alpha=0.5, include_preprocessing=True) + Dense",
                   _mobilenet_v3)}


# -- training ---------------------------------------------------------------------------------------------

def _load_photos() -> list:
    from PIL import Image

    return [Image.open(p).convert("RGB") for p in photo_paths()]


def _augment(photos, idx, size, rng) -> np.ndarray:
    """Random resized crops (area 0.3-1, aspect 3/4-4/3), flips, brightness/contrast jitter: float32 0-255."""
    from PIL import Image

    h, w = size
    out = np.empty((len(idx), h, w, 3), np.float32)
    for k, i in enumerate(idx):
        img = photos[i]
        W, H = img.size
        area = W * H * rng.uniform(0.3, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))) * (w / h)
        cw, ch = min(W, int(round(np.sqrt(area * ratio)))), min(H, int(round(np.sqrt(area / ratio))))
        x0, y0 = rng.integers(0, W - cw + 1), rng.integers(0, H - ch + 1)
        # Keras users resize with load_img's nearest by default: train on both that and a smooth filter
        resample = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
        a = np.asarray(img.resize((w, h), resample, box=(x0, y0, x0 + cw, y0 + ch)), np.float32)
        if rng.random() < 0.5:
            a = a[:, ::-1]
        a = (a - a.mean()) * rng.uniform(0.8, 1.2) + a.mean() * rng.uniform(0.8, 1.2)
        out[k] = np.clip(a, 0, 255)
    return out


def _full_photos(photos, size, interpolation="nearest") -> np.ndarray:
    from PIL import Image

    h, w = size
    resample = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}[interpolation]
    return np.stack([np.asarray(p.resize((w, h), resample), np.float32) for p in photos])


def _train_and_export(rec: dict, tmp: Path, stem: str, say: Callable[[str], None]) -> dict:
    import importlib.metadata

    keras = _keras()
    import torch
    from keras.applications import imagenet_utils

    mode, size = rec["mode"], tuple(rec["size"])

    def prep(x):
        return x if mode == "none" else imagenet_utils.preprocess_input(x.copy(), mode=mode)

    keras.utils.set_random_seed(rec["seed"])
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rng = np.random.default_rng(rec["seed"])
    photos = _load_photos()
    model = _ARCHS[mode][1](size, len(photos))
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=rec["lr"]),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=rec["label_smoothing"]))
    onehot = np.eye(len(photos), dtype=np.float32)
    start = time.perf_counter()
    for step in range(rec["steps"]):
        idx = rng.integers(0, len(photos), rec["batch"])
        loss = model.train_on_batch(prep(_augment(photos, idx, size, rng)), onehot[idx])
        if step % 25 == 0 or step == rec["steps"] - 1:
            say(f"keras {mode}: step {step + 1}/{rec['steps']} loss {float(np.ravel(loss)[0]):.3f}")
    train_seconds = time.perf_counter() - start
    _recalibrate_batchnorm(model, [prep(np.concatenate([_full_photos(photos, size),
                                                        _augment(photos, np.arange(len(photos)), size, rng)]))
                                   for _ in range(rec["bn_recalibration"])])
    full = prep(_full_photos(photos, size))
    probs = np.asarray(model.predict(full, verbose=0))
    acc = float((probs.argmax(1) == np.arange(len(photos))).mean())
    say(f"keras {mode}: trained in {train_seconds:.0f} s; full-photo top-1 {acc:.2f}")
    # The weights alone, compressed (a .keras file carries h5 overhead and, compiled, AdamW's moments):
    # the architecture is this module's code
    np.savez_compressed(tmp / f"{stem}.weights.npz", *model.get_weights())
    onnx_path = tmp / f"{stem}.onnx"
    model.export(str(onnx_path), format="onnx", verbose=False)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: full.astype(np.float32)})[0]
    diff = float(np.abs(got - probs).max())
    if diff > 1e-4:
        from edgeinfer.errors import ExportError

        raise ExportError(f"keras {mode}: expected the ONNX export to give Keras's probabilities within 1e-4, "
                          f"found a difference of {diff:.2e}. Check the keras and torch versions.")
    return dict(recipe=rec, seconds=round(train_seconds, 1), full_photo_top1=acc,
                full_photo_max_prob=[round(float(v), 4) for v in probs.max(1)],
                onnx_vs_keras_max_diff=diff, onnx_bytes=onnx_path.stat().st_size,
                versions={p: importlib.metadata.version(p) for p in ("keras", "torch", "onnx", "onnxruntime")})


def _recalibrate_batchnorm(model, batches: list[np.ndarray]) -> None:
    """Recompute every BatchNormalization's moving mean and variance as the average over ``batches``."""
    keras = _keras()
    bns = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, np.float32))
        bn.moving_variance.assign(np.ones(bn.moving_variance.shape, np.float32))
    for k, batch in enumerate(batches):
        for bn in bns:
            bn.momentum = k / (k + 1)  # moving = running average of the batch statistics seen so far
        model(batch, training=True)
    for bn, m in zip(bns, saved):
        bn.momentum = m


def main(argv: Sequence[str] | None = None) -> int:
    """Build (train and export, or find) the Keras models and print what training measured."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="*", default=list(MODES), choices=MODES)
    args = parser.parse_args(argv)
    for mode in args.modes:
        path, ref, meta = build(mode, progress=print)
        probs = ref(photo_paths())
        top1 = float((probs.argmax(1) == np.arange(len(LABELS))).mean())
        print(f"{mode}: {path} ({path.stat().st_size / 1e6:.2f} MB) arch {meta['arch']}; load_img reference "
              f"top-1 {top1:.2f}, max prob {probs.max(1).round(3).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
