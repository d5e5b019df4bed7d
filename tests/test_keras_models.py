"""The Keras test models (tests.material.keras_models): Keras's own ONNX exports of models trained here, and
their reference (load_img + preprocess_input + model.predict) on real photo files.

These check the material, not edgeinfer: that each export computes what the Keras model computes, that
the preprocessing ``meta`` names is the one ``preprocess_input(mode)`` applies, and that the models tell
the photos apart with probabilities away from 0 and 1 (so a parity check in probabilities is sensitive).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("keras")
from PIL import Image  # noqa: E402

from tests.material import keras_models  # noqa: E402

#: What each mode does to float RGB 0-255, written out from Keras's documentation of preprocess_input
PREPROCESS = {
    "caffe": lambda x: x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32),
    "tf": lambda x: x / np.float32(127.5) - np.float32(1.0),
    "torch": lambda x: (x / np.float32(255.0) - np.array([0.485, 0.456, 0.406], np.float32))
    / np.array([0.229, 0.224, 0.225], np.float32),
    "none": lambda x: x,
}


@pytest.mark.parametrize("mode", keras_models.MODES)
def test_keras_export_equals_keras_predict_on_photo_files(mode):
    import onnxruntime as ort

    onnx_path, reference_fn, meta = keras_models.build(mode)
    assert meta["layout"] == "NHWC" and meta["mode"] == mode and meta["interpolation"] == "nearest"
    assert meta["labels"] == list(keras_models.LABELS) and onnx_path.stat().st_size < 2_000_000
    h, w = meta["size"]
    assert meta["input_shape"][1:] == [h, w, 3]
    files = keras_models.photo_paths()
    probs = reference_fn(files)
    # the same pixels, by hand: PIL nearest to (w, h), float32, the mode's arithmetic, ONNX Runtime
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.Resampling.NEAREST), np.float32)
                  for f in files])
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run([meta["output"]], {meta["input"]: np.ascontiguousarray(PREPROCESS[mode](x), np.float32)})[0]
    assert got.shape == (len(files), len(keras_models.LABELS))
    assert np.abs(got - probs).max() < 1e-5
    assert (probs.argmax(1) == np.arange(len(files))).mean() >= 0.9  # it knows the photos
    top = probs.max(1)
    assert top.min() > 0.3 and top.max() < 0.999, top  # confident, not saturated


def test_reference_follows_the_interpolation_it_is_given():
    onnx_path, nearest, meta = keras_models.build("tf")
    _, bilinear, meta_b = keras_models.build("tf", interpolation="bilinear")
    assert meta_b["interpolation"] == "bilinear"
    files = keras_models.photo_paths()[:3]
    assert np.abs(nearest(files) - bilinear(files)).max() > 1e-3  # the resize filter shows in the output
    with pytest.raises(ValueError, match="load_img accepts"):
        keras_models.build("tf", interpolation="area")
