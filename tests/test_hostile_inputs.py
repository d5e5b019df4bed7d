"""Hostile inputs, many threads, interrupted writes: only typed errors escape, nothing is lost.

The fuzz tests run with a fixed, derandomised budget so CI is reproducible; each records how many cases
it tried in ``FUZZ_COUNTS`` (printed at the end of the session with -s).
"""

from __future__ import annotations

import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeinfer import EdgeInferError, Preprocessor, Spec
from edgeinfer.pipeline.images import decode

FUZZ = settings(max_examples=300, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_COUNTS: dict[str, int] = {}


def _count(name: str) -> None:
    FUZZ_COUNTS[name] = FUZZ_COUNTS.get(name, 0) + 1


def _valid() -> dict:
    return {"schema": "edgeinfer.spec/1", "task": "classification",
            "decode": {"color": "rgb", "exif_orientation": False, "alpha": "drop"},
            "steps": [{"op": "resize", "rule": "shorter", "size": 40, "interpolation": "bilinear"},
                      {"op": "center_crop", "size": [32, 32]}, {"op": "to_float", "scale": "div255"},
                      {"op": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}],
            "input": {"name": "input", "shape": [None, 3, 32, 32], "layout": "NCHW", "dtype": "float32"},
            "output": {"name": "logits", "kind": "logits"}, "labels": ["a", "b"], "provenance": {}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20)


@FUZZ
@given(path=st.lists(st.sampled_from(["steps", 0, 1, 2, 3, "size", "interpolation", "mean", "std", "input", "shape",
                                      "output", "kind", "decode", "color", "labels", "schema", "op", "scale", "rule",
                                      "self_test", "tta"]), min_size=1, max_size=3),
       value=json_values, delete=st.booleans())
def test_mutated_specs_raise_only_spec_errors(path, value, delete):
    _count("spec mutations")
    data = _valid()
    node = data
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    try:
        if delete and isinstance(node, dict):
            node.pop(path[-1], None)
        elif isinstance(node, (dict, list)):
            node[path[-1]] = value
    except (IndexError, TypeError):
        return
    try:
        spec = Spec.from_dict(data)
    except EdgeInferError:
        return
    Preprocessor(spec)  # whatever validates must also compile


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_random_spec_text_raises_only_spec_errors(text):
    _count("spec text")
    with pytest.raises(EdgeInferError):
        Spec.from_json(text)


def test_oversized_spec_and_labels_are_refused_before_use():
    with pytest.raises(EdgeInferError, match="at most"):
        Spec.from_json(" " * (17 * 1024 * 1024))
    data = _valid()
    data["labels"] = ["x"] * 200_000
    with pytest.raises(EdgeInferError, match="labels"):
        Spec.from_dict(data)


@pytest.fixture(scope="module")
def pre():
    return Preprocessor(Spec.from_dict(_valid()))


arrays = st.tuples(
    st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.bool_, np.int64]),
    st.lists(st.integers(0, 12), min_size=0, max_size=5),
    st.sampled_from([0.0, math.nan, math.inf, 255.0]))


@FUZZ
@given(arrays)
def test_random_arrays_raise_only_image_errors(pre, spec):
    _count("arrays")
    dtype, shape, fill = spec
    arr = np.full(shape, fill if dtype not in (np.uint8, np.int16, np.int64, np.bool_) else 7, dtype=dtype)
    try:
        out = pre(arr)
    except EdgeInferError:
        return
    assert out.shape == (3, 32, 32) and np.isfinite(out).all()


def test_huge_frames_are_refused_before_any_allocation(pre):
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20_000, 20_000, 3))  # a view: no memory behind it
    with pytest.raises(EdgeInferError, match="at most"):
        pre(huge)


@pytest.fixture(scope="module")
def jpeg_bytes():
    import sklearn

    return (Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg").read_bytes()


@FUZZ
@given(cut=st.integers(0, 60_000), flips=st.lists(st.tuples(st.integers(0, 60_000), st.integers(0, 255)), max_size=8))
def test_corrupted_and_truncated_images_decode_or_raise_image_errors(pre, jpeg_bytes, cut, flips):
    _count("corrupted images")
    data = bytearray(jpeg_bytes[: len(jpeg_bytes) - cut])
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    try:
        pre(bytes(data))
    except EdgeInferError:
        pass


def test_paths_that_do_not_exist_or_are_directories(pre, tmp_path):
    for bad in (tmp_path / "absent.jpg", tmp_path, tmp_path / "empty.jpg"):
        if bad.name == "empty.jpg":
            bad.write_bytes(b"")
        with pytest.raises(EdgeInferError):
            pre(bad)


@pytest.mark.slow
def test_predict_from_eight_threads_equals_serial(exported, photo_files):
    import edgeinfer

    model = edgeinfer.load(exported["resnet18"][1])
    files = list(photo_files) * 4
    serial = [model.predict(f).scores for f in files]
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait() if i < 8 else None
        return model.predict(files[i]).scores

    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(work, range(len(files))))
    for a, b in zip(serial, threaded):
        assert np.array_equal(a, b)


def test_an_interrupted_write_leaves_the_target_untouched(tmp_path, monkeypatch):
    from edgeinfer.tools import files

    target = tmp_path / "report.json"
    target.write_text("old")

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        files.write_text_atomic(target, json.dumps({"new": 1}))
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]


@pytest.mark.slow
def test_a_failed_export_never_leaves_a_file_at_the_target(tmp_path, photos):
    import torch

    import converters
    from converters.zoo import imagenet_eval_transform

    class Unexportable(torch.nn.Module):
        def forward(self, x):
            m = x.mean(dim=(2, 3))
            if float(m.sum()) > 0:  # data-dependent Python control flow: export cannot trace it
                return m * 2
            return m

    target = tmp_path / "m.onnx"
    with pytest.raises(EdgeInferError):
        converters.export(Unexportable().eval(), target, transform=imagenet_eval_transform(72, 64),
                          images=list(photos.values()))
    assert not target.exists() and not any(p.suffix == ".tmp" for p in tmp_path.iterdir())


def test_zz_report_fuzz_counts(capsys):
    with capsys.disabled():
        print(f"\nfuzz cases tried: {FUZZ_COUNTS}")
    assert sum(FUZZ_COUNTS.values()) >= 900
