"""Input contracts: the graph's layout, element type, channel order and extra inputs, fed and validated.

Real graphs exported here with torch (each contract a wrapper around one CNN: the model takes uint8, or
float16, or BGR, or channels-last, or a second input), Keras models trained here and exported by Keras's own
exporter (tests/material/keras_models.py), real photo files.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import edgeinfer
from edgeinfer.errors import ModelError, SpecError

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

SIZE = 48
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 5)).eval()


class Uint8In(torch.nn.Module):  # scaling and normalising inside the graph
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        x = x.float() / 255.0
        return self.net((x - torch.from_numpy(MEAN).view(1, 3, 1, 1)) / torch.from_numpy(STD).view(1, 3, 1, 1))


class Fp16In(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        return self.net(x.float())


class BgrIn(torch.nn.Module):  # a Caffe-era model: channels in BGR order
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        return self.net(x[:, [2, 1, 0]])


class NhwcIn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


class TwoIn(torch.nn.Module):  # the original image size as a second input, as some detectors take it
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x, orig_hw):
        return self.net(x) + 0.1 * torch.log(orig_hw[:, 0:1] / orig_hw[:, 1:2])


def _export(module, example, path, names=("input",)):
    with torch.no_grad():
        torch.onnx.export(module, example, str(path), input_names=list(names), output_names=["logits"],
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}}, opset_version=18,
                          dynamo=False)
    return path


def _pixels(path) -> np.ndarray:
    """torchvision's loader and an exact PIL bilinear resize: (SIZE, SIZE, 3) uint8 RGB."""
    with Image.open(path) as f:
        return np.asarray(f.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


def _normalised(px: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((px / np.float32(255) - MEAN) / STD).astype(np.float32).transpose(2, 0, 1))[None]


PLAIN = {"size": SIZE, "mean": MEAN.tolist(), "std": STD.tolist()}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("contracts")
    x = torch.zeros(1, 3, SIZE, SIZE)
    return {
        "uint8": _export(Uint8In().eval(), (x.to(torch.uint8),), d / "uint8.onnx"),
        "float16": _export(Fp16In().eval(), (x.half(),), d / "fp16.onnx"),
        "bgr": _export(BgrIn().eval(), (x,), d / "bgr.onnx"),
        "nhwc": _export(NhwcIn().eval(), (x.permute(0, 2, 3, 1),), d / "nhwc.onnx"),
        "two": _export(TwoIn().eval(), (x, torch.tensor([[480.0, 640.0]])), d / "two.onnx", ("input", "orig_hw")),
    }


def test_each_contract_loads_validates_and_matches_its_reference(graphs, photo_files):
    cases = {
        "uint8": ({"size": SIZE, "scale": "none"}, lambda px, hw: Uint8In()(torch.from_numpy(px.transpose(2, 0, 1).copy())[None])),
        "float16": (PLAIN, lambda px, hw: Fp16In()(_normalised(px).half())),
        "bgr": ({**PLAIN, "channel_order": "bgr", "mean_order": "rgb"}, lambda px, hw: BgrIn()(_normalised(px)[:, [2, 1, 0]])),
        "nhwc": (PLAIN, lambda px, hw: NhwcIn()(_normalised(px).permute(0, 2, 3, 1))),
        "two": ({**PLAIN, "extra_inputs": [{"name": "orig_hw", "rule": "orig_hw"}]},
                lambda px, hw: TwoIn()(_normalised(px), torch.tensor([hw], dtype=torch.float32))),
    }
    for key, (source, reference) in cases.items():
        model = edgeinfer.load(graphs[key], spec=source)
        inp = model.spec.input
        assert (inp.dtype, inp.layout, inp.channel_order) == {
            "uint8": ("uint8", "NCHW", "rgb"), "float16": ("float16", "NCHW", "rgb"), "bgr": ("float32", "NCHW", "bgr"),
            "nhwc": ("float32", "NHWC", "rgb"), "two": ("float32", "NCHW", "rgb")}[key]
        for path in photo_files[:4]:
            with Image.open(path) as f:
                hw = (f.height, f.width)
            with torch.no_grad():
                want = torch.softmax(reference(_pixels(path), hw).float(), 1)[0].numpy()
            got = model.predict(str(path), top_k=5)
            probs = np.array([dict((i, p) for i, _, p in got.top_k)[i] for i in range(5)])
            tol = 2e-3 if key == "float16" else 1e-5
            assert np.max(np.abs(probs - want)) <= tol, (key, path.name, probs, want)
        batch = model.predict_batch([str(p) for p in photo_files[:3]])
        assert [b.index for b in batch] == [model.predict(str(p)).index for p in photo_files[:3]]


def test_graph_input_is_what_the_graph_receives_and_preprocess_the_transforms_output(graphs, photo_files):
    # what each reference above hands its graph, against model.graph_input; preprocess stays RGB, NCHW, float32
    given = {
        "uint8": ({"size": SIZE, "scale": "none"}, lambda px: torch.from_numpy(px.transpose(2, 0, 1).copy())[None]),
        "float16": (PLAIN, lambda px: _normalised(px).half()),
        "bgr": ({**PLAIN, "channel_order": "bgr", "mean_order": "rgb"}, lambda px: _normalised(px)[:, [2, 1, 0]]),
        "nhwc": (PLAIN, lambda px: _normalised(px).permute(0, 2, 3, 1)),
    }
    path = photo_files[0]
    for key, (source, fed) in given.items():
        model = edgeinfer.load(graphs[key], spec=source)
        want = fed(_pixels(path)).numpy()
        got = model.graph_input(str(path))
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))) <= (1e-3 if key == "float16" else 1e-5), key
        assert model.preprocess(str(path)).shape == (3, SIZE, SIZE) and model.preprocess(str(path)).dtype == np.float32
    bgr = edgeinfer.load(graphs["bgr"], spec={**PLAIN, "channel_order": "bgr", "mean_order": "rgb"})
    assert np.array_equal(bgr.graph_input(str(path))[0], bgr.preprocess(str(path))[::-1])


def test_wrong_contracts_are_refused_at_load_naming_both_sides(graphs):
    with pytest.raises(ModelError, match=r"tensor\(uint8\) in the graph, the spec says float32"):
        edgeinfer.load(graphs["uint8"], spec={**PLAIN, "dtype": "float32"})
    with pytest.raises(SpecError, match="no scaling or normalising for a uint8 input"):
        edgeinfer.load(graphs["uint8"], spec=PLAIN)
    with pytest.raises(ModelError, match=r"layout NCHW puts the 1 or 3 channels at axis 1.*channels-last \(NHWC\)"):
        edgeinfer.load(graphs["nhwc"], spec={**PLAIN, "layout": "NCHW"})
    with pytest.raises(ModelError, match="input 'orig_hw' .* the spec gives no value for"):
        edgeinfer.load(graphs["two"], spec=PLAIN)
    with pytest.raises(ModelError, match="'orig_hw' is tensor\\(float\\) in the graph, the spec's extra rule says int64"):
        edgeinfer.load(graphs["two"], spec={**PLAIN, "extra_inputs": [{"name": "orig_hw", "rule": "orig_hw",
                                                                         "dtype": "int64"}]})
    with pytest.raises(SpecError, match="rule"):
        edgeinfer.load(graphs["two"], spec={**PLAIN, "extra_inputs": [{"name": "orig_hw", "rule": "the size"}]})


def test_inspect_shows_the_contract(graphs, tmp_path):
    out = tmp_path / "two_with_spec.onnx"
    from converters import attach_spec

    attach_spec(graphs["two"], out, {**PLAIN, "channel_order": "bgr", "mean_order": "rgb", "extra_inputs": [{"name": "orig_hw",
                                                                                       "rule": "orig_wh"}]})
    shown = subprocess.run([sys.executable, "-m", "edgeinfer", "inspect", str(out)], check=True, capture_output=True,
                           text=True).stdout
    assert "BGR (channels reversed)" in shown and "extra input 'orig_hw' (float32): orig_wh" in shown
    model = edgeinfer.load(out)
    assert model.spec.input.extra[0].rule == "orig_wh"


# -- Keras, trained here, exported by Keras's own exporter --------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["caffe", "tf", "torch", "none"])
def test_keras_models_equal_load_img_preprocess_input_predict(mode):
    from tests.material import keras_models

    onnx, reference, meta = keras_models.build(mode)
    paths = keras_models.photo_paths()
    for source in ({"mode": mode, "size": list(meta["size"])},):
        model = edgeinfer.load(onnx, spec=source, labels=meta["labels"])
        assert model.spec.input.layout == "NHWC"
        want = reference(paths)
        got = np.stack([model.run(model.preprocess(str(p))[None])[0] for p in paths])
        assert np.max(np.abs(got - want)) <= 1e-4, (mode, np.max(np.abs(got - want)))
        assert np.array_equal(got.argmax(1), want.argmax(1))
        assert len(set(want.argmax(1))) >= 5  # trained: the photos are told apart


def test_keras_names_and_refusals():
    from edgeinfer.importers import from_keras

    pre = from_keras("keras:ResNet50")
    assert pre.contract == {"layout": "NHWC", "channel_order": "bgr"}
    assert pre.steps[0].params["size"] == [224, 224] and pre.steps[0].params["interpolation"] == "nearest"
    assert [s.op for s in from_keras("keras:EfficientNetB0").steps] == ["resize", "to_float"]
    with pytest.raises(SpecError, match="image_dataset_from_directory"):
        from_keras({"mode": "tf", "size": 224, "loader": "image_dataset_from_directory"})
    with pytest.raises(SpecError, match="keep_aspect_ratio"):
        from_keras({"mode": "tf", "size": 224, "keep_aspect_ratio": True})
    with pytest.raises(SpecError, match="keras.applications name"):
        from_keras("keras:NoSuchNet")
