"""Keras through tf2onnx: a TensorFlow-converted model, loaded with a Keras source, against Keras itself.

The trained weights committed in ``tests/data/keras/`` (``tests/material/keras_models.py``) go into the same
architectures built on the TensorFlow backend (``KERAS_BACKEND=tensorflow``): "tf" (MobileNetV2 alpha=0.35),
"caffe" (the small ResNet v1) and "none" (MobileNetV3Small alpha=0.5 with its Rescaling layer + Dense). Each is converted with ``tf2onnx.convert.from_keras(model,
input_signature=[tf.TensorSpec((None, h, w, 3), tf.float32)], opset=17)``, loaded with
``edgeinfer.load(onnx, spec={"mode": mode, "size": [h, w]}, labels=...)`` and run on the ten photo files
(``keras_models.photo_paths()``). The reference is what a Keras user runs on TensorFlow::

    keras.utils.load_img(path, target_size=(h, w))  # nearest, PIL
    keras.utils.img_to_array(img)[None]; keras.applications.imagenet_utils.preprocess_input(x, mode=mode)  # not for mode "none"
    model.predict(x)

Recorded per mode: max |p_edgeinfer - p_keras|, top-1 agreement, the Transpose nodes in the converted
graph (and left after ONNX Runtime's own optimiser), the converter's warnings, and the same comparison for
the Keras-exporter ONNX of the same weights (``tests/data/keras/<mode>-*.onnx``, exported on the torch
backend). Writes ``benchmarks/tf2onnx_check.json``.

TensorFlow is ~1.4 GB, so this runs in its own venv, outside the repository and outside CI::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu tf2onnx keras onnxruntime numpy opencv-python-headless \\
        pillow scikit-image scikit-learn onnx
    echo /work/main > $(/tmp/tfvenv/bin/python -c "import site; print(site.getsitepackages()[0])")/edgeinfer.pth
    /tmp/tfvenv/bin/python benchmarks/tf2onnx_check.py [--install-seconds S]

(the ``.pth`` line puts the repository on the path, as ``pip install --no-deps -e .`` would, without
rebuilding ``edgeinfer/_resample`` in the working tree.)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().with_suffix(".json")
TOL = 1e-4


def _keras_models():
    """tests/material/keras_models.py as a standalone module (no torch needed to import it)."""
    spec = importlib.util.spec_from_file_location("keras_models", ROOT / "tests" / "material" / "keras_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _build(km, mode: str, keras):
    """The architecture of ``mode`` on the TensorFlow backend, as keras_models builds it on torch."""
    size, classes = km.SIZES[mode], len(km.LABELS)
    if mode == "tf":  # keras_models._mobilenet_v2 insists on the torch backend: the same call
        return keras.applications.MobileNetV2(input_shape=(*size, 3), alpha=0.35, weights=None, classes=classes)
    if mode == "caffe":  # keras_models._resnet is backend-neutral
        return km._resnet(size, classes)
    if mode == "none":  # keras_models._mobilenet_v3 on the TensorFlow backend
        base = keras.applications.MobileNetV3Small(input_shape=(*size, 3), alpha=0.5, weights=None, include_top=False,
                                                   pooling="avg", include_preprocessing=True)
        out = keras.layers.Dense(classes, activation="softmax", name="predictions")(base.output)
        return keras.Model(base.input, out, name="mobilenetv3small_photos")
    raise ValueError(mode)


def _weights(km, mode: str) -> Path:
    return km.COMMITTED / f"{mode}-{km._key(km.recipe(mode))}.weights.npz"


def _reference(keras, model, mode, size, paths) -> np.ndarray:
    from keras.applications import imagenet_utils

    x = np.stack([keras.utils.img_to_array(keras.utils.load_img(str(p), target_size=size)) for p in paths])
    if mode != "none":
        x = imagenet_utils.preprocess_input(x, mode=mode)
    return np.asarray(model.predict(x, verbose=0), np.float32)


def _transposes(path: Path) -> dict:
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path)).graph
    counts = {"nodes": len(graph.node), "transpose": sum(n.op_type == "Transpose" for n in graph.node)}
    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "opt.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(opt)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        g = onnx.load(str(opt)).graph
        counts.update(ort_optimized_nodes=len(g.node),
                      ort_optimized_transpose=sum(n.op_type == "Transpose" for n in g.node))
    return counts


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[str] = []
        self.info: list[str] = []

    def emit(self, record):
        msg = f"{record.levelname} {record.name}: {record.getMessage()}"[:400]
        (self.records if record.levelno >= logging.WARNING else self.info).append(msg)


def _edgeinfer(onnx_path, mode, size, labels, paths):
    import edgeinfer

    model = edgeinfer.load(onnx_path, spec={"mode": mode, "size": list(size)}, labels=list(labels), threads=2)
    got = np.stack([model.run(model.preprocess(str(p))[None])[0] for p in paths])
    return model, got


def _compare(got, want, labels) -> dict:
    diff = np.abs(got - want)
    return dict(max_abs_diff=float(diff.max()), within_1e4=bool(diff.max() <= TOL),
                max_rel_diff=float(diff.max() / np.abs(want).max()),
                top1_agree=int((got.argmax(1) == want.argmax(1)).sum()), images=len(got),
                top1_correct=int((got.argmax(1) == np.arange(len(labels))).sum()),
                worst_image=labels[int(diff.max(1).argmax())])


def check(km, key: str, mode: str, size, model, weights: str, exported: Path | None, tmp: Path, paths) -> dict:
    """Convert ``model`` with tf2onnx and compare edgeinfer on it (and on ``exported``) with Keras."""
    import keras
    import tensorflow as tf
    import tf2onnx

    rec: dict = dict(mode=mode, size=list(size), weights=weights)
    want = _reference(keras, model, mode, size, paths)
    rec["keras_top1_correct"] = int((want.argmax(1) == np.arange(len(km.LABELS))).sum())
    rec["keras_output_range"] = [float(want.min()), float(want.max())]

    onnx_path = tmp / f"{key}.tf2onnx.onnx"
    handler = _Collect()
    logging.getLogger("tf2onnx").setLevel(logging.INFO)  # its optimiser's summary ("Transpose -120 (121->1)")
    logging.getLogger().addHandler(handler)  # tf2onnx's loggers propagate to the root
    err = io.StringIO()
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec((None, *size, 3), tf.float32, name="input")],
                                       opset=17, output_path=str(onnx_path))
        except Exception as exc:  # record exactly what failed
            rec["convert_error"] = f"{type(exc).__name__}: {exc}"[:2000]
    rec["convert_seconds"] = round(time.perf_counter() - t0, 1)
    logging.getLogger().removeHandler(handler)
    lines = [ln for ln in err.getvalue().splitlines() if "WARNING" in ln or "ERROR" in ln or "Failed" in ln]
    rec["converter_warnings"] = (handler.records + [f"{w.category.__name__}: {w.message}"[:400] for w in caught]
                                 + [ln[:400] for ln in lines])
    rec["converter_log"] = handler.info
    if "convert_error" in rec:
        return rec
    rec["onnx_bytes"] = onnx_path.stat().st_size
    rec["graph"] = _transposes(onnx_path)
    em, got = _edgeinfer(onnx_path, mode, size, km.LABELS, paths)
    rec["input"] = dict(name=em.session.get_inputs()[0].name, shape=list(em.session.get_inputs()[0].shape),
                        layout=em.spec.input.layout)
    rec["tf2onnx_vs_keras"] = _compare(got, want, km.LABELS)

    if exported is not None:
        _, got_k = _edgeinfer(exported, mode, size, km.LABELS, paths)
        rec["keras_exporter_onnx"] = dict(path=str(exported.relative_to(ROOT)), graph=_transposes(exported),
                                          vs_keras_tf=_compare(got_k, want, km.LABELS),
                                          vs_tf2onnx_max_abs_diff=float(np.abs(got_k - got).max()))
    return rec


def trained(km, mode: str, tmp: Path, paths) -> dict:
    """A committed trained model of keras_models, rebuilt on TensorFlow."""
    import keras

    model = _build(km, mode, keras)
    with np.load(_weights(km, mode)) as npz:
        model.set_weights([npz[f"arr_{i}"] for i in range(len(npz.files))])
    exported = km.COMMITTED / f"{mode}-{km._key(km.recipe(mode))}.onnx"
    return dict(arch=km._ARCHS[mode][0], **check(km, mode, mode, km.SIZES[mode], model,
                                                  str(_weights(km, mode).relative_to(ROOT)), exported, tmp, paths))


def stock(km, tmp: Path, paths, *, trained_backbone: bool) -> dict:
    """keras.applications.MobileNetV3Small with its own head (``include_top=True``: 1x1 convs after the pooling),
    alpha 0.5, the size of the "none" model: the configuration on which tf2onnx's transpose optimiser logs
    "Failed to apply optimize_transpose" (../shared/DATA.md) -- measured here only while the backbone is
    untrained. With ``trained_backbone`` the trained "none" backbone's weights are copied by layer name and
    the head's two convs stay untrained (seed 0): softmax probabilities. Without, the whole model is
    untrained, its softmax uniform to float32's last bit, so it outputs logits (``classifier_activation=None``,
    about 1e-10: read ``max_rel_diff``). Neither is a classifier: a check of the arithmetic of the graph
    tf2onnx leaves."""
    import keras

    keras.utils.set_random_seed(0)
    size = km.SIZES["none"]
    model = keras.applications.MobileNetV3Small(input_shape=(*size, 3), alpha=0.5, weights=None, classes=len(km.LABELS),
                                                classifier_activation="softmax" if trained_backbone else None)
    weights = "untrained (seed 0); outputs logits"
    if trained_backbone:
        backbone = _build(km, "none", keras)
        with np.load(_weights(km, "none")) as npz:
            backbone.set_weights([npz[f"arr_{i}"] for i in range(len(npz.files))])
        trained_layers = {layer.name: layer for layer in backbone.layers}
        copied = 0
        for layer in model.layers:
            src = trained_layers.get(layer.name)
            if (src is not None and layer.weights
                    and [w.shape for w in src.get_weights()] == [w.shape for w in layer.get_weights()]):
                layer.set_weights(src.get_weights())
                copied += 1
        weights = f"{copied} layers from {_weights(km, 'none').relative_to(ROOT)}, the head untrained (seed 0)"
    return dict(arch="keras.applications.MobileNetV3Small(alpha=0.5, weights=None, classes=10), include_top=True",
                **check(km, "stock_mnv3" + ("" if trained_backbone else "_untrained"), "none", size, model, weights,
                        None, tmp, paths))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="*", default=["tf", "caffe", "none"])
    parser.add_argument("--no-stock", action="store_true", help="skip the MobileNetV3Small with its own head")
    parser.add_argument("--install-seconds", type=float, default=None,
                        help="how long the venv's pip install took (recorded as given)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    km = _keras_models()
    paths = km.photo_paths()
    versions = {p: importlib.metadata.version(p) for p in
                ("tensorflow-cpu", "tf2onnx", "keras", "onnx", "onnxruntime", "numpy", "pillow", "opencv-python-headless")}
    import keras

    result = dict(command="/tmp/tfvenv/bin/python benchmarks/tf2onnx_check.py", tolerance=TOL,
                  python=platform.python_version(), machine=platform.machine(), keras_backend=keras.backend.backend(),
                  versions=versions, venv=sys.prefix, install_seconds=args.install_seconds,
                  photos=[str(p.name) for p in paths], modes={})
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            result["modes"][mode] = trained(km, mode, Path(tmp), paths)
        if not args.no_stock:
            result["modes"]["stock_mnv3"] = stock(km, Path(tmp), paths, trained_backbone=True)
            result["modes"]["stock_mnv3_untrained"] = stock(km, Path(tmp), paths, trained_backbone=False)
    OUT.write_text(json.dumps(result, indent=2) + "\n")

    print(f"tensorflow {versions['tensorflow-cpu']}, tf2onnx {versions['tf2onnx']}, keras {versions['keras']}, "
          f"onnxruntime {versions['onnxruntime']}")
    print(f"{'model':20} {'ONNX from':14} {'max |dp| vs Keras(TF)':>22} {'relative':>9} {'top-1 agree':>11} {'Transpose':>9} "
          f"{'after ORT opt':>13}")
    for mode, rec in result["modes"].items():
        if "convert_error" in rec:
            print(f"{mode:20} tf2onnx failed: {rec['convert_error'][:200]}")
            continue
        rows = [("tf2onnx", rec["tf2onnx_vs_keras"], rec["graph"])]
        if "keras_exporter_onnx" in rec:
            rows.append(("keras export", rec["keras_exporter_onnx"]["vs_keras_tf"], rec["keras_exporter_onnx"]["graph"]))
        for src, cmp, graph in rows:
            print(f"{mode:20} {src:14} {cmp['max_abs_diff']:22.2e} {cmp['max_rel_diff']:9.1e} {cmp['top1_agree']:>6}/{cmp['images']:<4} "
                  f"{graph['transpose']:>9} {graph['ort_optimized_transpose']:>13}")
        summary = next((m for m in rec["converter_log"] if "After optimization" in m), "")
        print(f"{'':20} tf2onnx: {len(rec['converter_warnings'])} warnings; its optimiser: "
              f"{', '.join(part for part in summary.split(', ') if part.startswith('Transpose')) or '-'}")
    print(f"wrote {OUT}")
    ok = all("convert_error" not in r and r["tf2onnx_vs_keras"]["within_1e4"]
             and r["tf2onnx_vs_keras"]["max_rel_diff"] <= TOL for r in result["modes"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
