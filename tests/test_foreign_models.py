"""Models edgeinfer did not export: the onnx package's light model-zoo models, an Ultralytics classifier,
a Hugging Face model written by plain torch.onnx.export with its processor config beside it. Each is run
through edgeinfer.load + predict and compared with ONNX Runtime fed the tool's own preprocessing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

import edgeinfer
from converters import attach_spec, spec_for
from converters.transforms import spec_from_transform
from edgeinfer import ModelError, SpecError, SpecMissingError
from edgeinfer import importers as sources
from edgeinfer.errors import RandomTransformError
from edgeinfer.tasks.classification import class_scores

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.name for p in LIGHT.glob("light_*.onnx"))
IMAGENET_PLAIN = {"size": 224, "resize": 256, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _canon(steps) -> list:
    """Steps with defaults filled in and unset options dropped, for comparing importers."""
    from edgeinfer.pipeline import ops

    return [(s.op, {k: v for k, v in ops.OPS[s.op].with_defaults(s.to_dict()).items() if v is not None})
            for s in steps]


def _ort(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _last_op(path: Path) -> str:
    return onnx.load(str(path), load_external_data=False).graph.node[-1].op_type


# -- onnx model-zoo light models ---------------------------------------------------------------------
def test_the_light_models_are_there():
    assert len(LIGHT_MODELS) >= 9, LIGHT_MODELS


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_runs_with_a_plain_sidecar(name, photos, imagenet_transform):
    path = LIGHT / name
    model = edgeinfer.load(path, spec=IMAGENET_PLAIN)
    assert model.fixed_batch == 1
    # a graph ending in Softmax is read as probabilities and never softmaxed again
    assert model.spec.output.kind == ("probabilities" if _last_op(path) == "Softmax" else "logits")
    images = [photos["chelsea"], photos["astronaut"], photos["coffee"]]
    preds = model.predict_batch(images, color="rgb")  # three images through a fixed-batch-1 graph
    assert len(preds) == 3
    session = _ort(path)
    for img, pred in zip(images, preds):
        # the tool's own preprocessing: torchvision's ImageNet eval transform on the PIL image
        ref_in = imagenet_transform(Image.fromarray(img)).numpy()
        got_in = model.preprocess(img, color="rgb")
        assert np.abs(ref_in - got_in).max() * 0.225 * 255 <= 1e-3  # 0 levels
        ref = class_scores(session.run(None, {model.spec.input.name: ref_in[None]})[0])[0]
        if model.spec.output.kind == "logits":
            ref = np.exp(ref - ref.max()) / np.exp(ref - ref.max()).sum()
        np.testing.assert_allclose(pred.scores, ref, atol=1e-6)
        assert abs(float(pred.scores.sum()) - 1.0) < 1e-4


def test_plain_source_gives_the_steps_of_the_transform_it_describes(imagenet_transform):
    """The importer round-trips: the plain dict and the real torchvision transform give the same steps."""
    plain = sources.from_plain(IMAGENET_PLAIN)
    real = spec_from_transform(imagenet_transform)
    assert _canon(plain.steps) == _canon(real.steps)


def test_attach_writes_a_spec_that_loads_back_identically(tmp_path, photos):
    dst = tmp_path / "resnet50.onnx"
    spec = attach_spec(LIGHT / "light_resnet50.onnx", dst, IMAGENET_PLAIN, labels=[f"c{i}" for i in range(1000)])
    again = edgeinfer.load(dst)
    assert again.spec == spec and again.labels[3] == "c3" and again.spec.input.name == "gpu_0/data_0"
    # and attaching the written spec (as a JSON file) to the original gives the same spec
    (tmp_path / "spec.json").write_text(spec.to_json())
    assert spec_for(LIGHT / "light_resnet50.onnx", tmp_path / "spec.json") == spec


def test_a_source_that_does_not_fit_the_model_is_refused_before_writing(tmp_path):
    dst = tmp_path / "out.onnx"
    with pytest.raises(ModelError, match=r"1, 3, 224, 224.*256x256"):
        attach_spec(LIGHT / "light_squeezenet.onnx", dst, {**IMAGENET_PLAIN, "size": 256, "resize": 292})
    assert not dst.exists()
    with pytest.raises(SpecError, match="unknown key.*'crop'"):
        attach_spec(LIGHT / "light_squeezenet.onnx", dst, {"size": 224, "crop": 224})
    with pytest.raises(ModelError, match="labels"):
        attach_spec(LIGHT / "light_squeezenet.onnx", dst, IMAGENET_PLAIN, labels=["a", "b"])
    assert not dst.exists()


def test_a_read_only_model_takes_a_sidecar_and_is_left_untouched(tmp_path, photos):
    path = tmp_path / "ro.onnx"
    path.write_bytes((LIGHT / "light_shufflenet.onnx").read_bytes())
    path.chmod(stat.S_IRUSR)
    before = path.read_bytes()
    (tmp_path / "plain.json").write_text(json.dumps(IMAGENET_PLAIN))
    model = edgeinfer.load(path, spec=tmp_path / "plain.json")
    assert model.predict(photos["rocket"], color="rgb").scores.shape == (1000,)
    assert path.read_bytes() == before


def test_a_model_without_a_spec_lists_every_way_to_give_it_one():
    with pytest.raises(SpecMissingError) as err:
        edgeinfer.load(LIGHT / "light_squeezenet.onnx")
    text = str(err.value)
    for way in ("converters.export", "edgeinfer attach", "attach_spec", "spec=SOURCE", "{size, mean, std, interpolation}",
                "preprocessor_config.json", "timm:MODEL_NAME", "Ultralytics"):
        assert way in text, way


def test_transform_and_timm_sources(tmp_path, imagenet_transform):
    from converters.importers import timm_transform

    spec = attach_spec(LIGHT / "light_inception_v1.onnx", tmp_path / "a.onnx", imagenet_transform)
    assert [s.op for s in spec.steps] == ["resize", "center_crop", "to_float", "normalize"]
    name = "resnet50.a1_in1k"  # 224 input, crop_pct 0.95, bicubic
    spec = spec_for(LIGHT / "light_resnet50.onnx", f"timm:{name}")
    real = spec_from_transform(timm_transform(name))
    assert _canon(spec.steps) == _canon(real.steps)
    assert spec.provenance["timm_model"] == name
    with pytest.raises(ModelError, match="384x384"):
        spec_for(LIGHT / "light_resnet50.onnx", "timm:vit_base_patch16_384.augreg_in21k_ft_in1k")
    from torchvision import transforms as T

    with pytest.raises(RandomTransformError, match="RandomResizedCrop"):
        spec_for(LIGHT / "light_resnet50.onnx", T.Compose([T.RandomResizedCrop(224), T.ToTensor()]))


def test_cli_attach_with_flags_and_from_a_file(tmp_path):
    out = tmp_path / "sq.onnx"
    res = subprocess.run([sys.executable, "-m", "edgeinfer", "attach", str(LIGHT / "light_squeezenet.onnx"), "-o",
                          str(out), "--size", "224", "--resize", "256", "--mean", "0.485", "0.456", "0.406",
                          "--std", "0.229", "0.224", "0.225", "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["spec"]["input"]["name"] == "data_0"
    assert _canon(edgeinfer.load(out).spec.steps) == _canon(sources.from_plain(IMAGENET_PLAIN).steps)
    (tmp_path / "plain.json").write_text(json.dumps({**IMAGENET_PLAIN, "size": 300}))
    res = subprocess.run([sys.executable, "-m", "edgeinfer", "attach", str(LIGHT / "light_squeezenet.onnx"), "-o",
                          str(tmp_path / "bad.onnx"), "--from", str(tmp_path / "plain.json")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "300x300" in res.stderr and not (tmp_path / "bad.onnx").exists()


# -- Ultralytics -------------------------------------------------------------------------------------
def _ultralytics_export(cfg: str, folder: Path, photos: list | None = None) -> Path:
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO
    from ultralytics.data.augment import classify_transforms

    yolo = YOLO(cfg)  # architecture from its yaml: random weights, no download
    if photos:
        # Random init leaves activations ~1e-10 deep in the net, so every image scores the same. Batch-norm
        # statistics recomputed on real photos (and a sharper head) make the scores depend on the image.
        tf = classify_transforms(224)
        batch = torch.stack([tf(Image.fromarray(p)) for p in photos])
        for m in yolo.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        yolo.model.train()
        with torch.no_grad():
            yolo.model(batch)
            yolo.model.model[-1].linear.weight.mul_(30.0)
        yolo.model.eval()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return folder / Path(yolo.export(format="onnx", imgsz=224)).name
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def yolo_cls(tmp_path_factory, photos) -> Path:
    return _ultralytics_export("yolo11n-cls.yaml", tmp_path_factory.mktemp("yolo"), list(photos.values()))


@pytest.mark.slow
def test_ultralytics_classifier_loads_from_its_own_metadata(yolo_cls, photos):
    from ultralytics import YOLO

    model = edgeinfer.load(yolo_cls)  # no attach step
    assert model.spec.output.kind == "probabilities" and model.spec.provenance["source"] == "ultralytics"
    meta = _ort(yolo_cls).get_modelmeta().custom_metadata_map
    assert meta["task"] == "classify" and len(model.labels) == 1000
    from ultralytics.data.augment import classify_transforms  # the importer says what the tool's transform says

    assert _canon(model.spec.steps) == _canon(spec_from_transform(classify_transforms([224, 224])).steps[:3])
    yolo = YOLO(str(yolo_cls), task="classify")
    tops = set()
    for name in ("chelsea", "astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"):
        bgr = np.ascontiguousarray(photos[name][..., ::-1])
        ref = yolo.predict(bgr, verbose=False)[0].probs.data.cpu().numpy()
        ref_in = yolo.predictor.preprocess([bgr]).cpu().numpy()[0]  # Ultralytics' own preprocessing
        assert np.abs(ref_in - model.preprocess(bgr)).max() * 255 <= 1e-3  # 0 levels
        pred = model.predict(bgr)
        np.testing.assert_allclose(pred.scores, ref, atol=1e-6)
        tops.add(pred.index)
    assert len(tops) >= 2, "the photos should not all get the same class"


@pytest.mark.slow
def test_ultralytics_segmenter_loads_from_its_own_metadata_and_unknown_tasks_are_refused(tmp_path):
    path = _ultralytics_export("yolo11n-seg.yaml", tmp_path)
    spec = edgeinfer.load(path).spec
    assert spec.task == "segment" and spec.postprocess.outputs == ("output0", "output1")
    assert [s.op for s in spec.steps] == ["letterbox", "to_float"]
    from edgeinfer import importers as sources

    with pytest.raises(ModelError, match=r"task 'track'.*expected one of"):
        sources.from_ultralytics({"task": "track", "imgsz": "[320, 320]", "names": "{0: 'a'}", "stride": "32"})


# -- Hugging Face --------------------------------------------------------------------------------------
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
HF_CASES = {  # name: (class name, kwargs)
    "vit": ("ViTImageProcessor", {"size": {"height": 224, "width": 224}}),
    "vit_bicubic_nonsquare": ("ViTImageProcessor", {"size": {"height": 160, "width": 200}, "resample": 3}),
    "convnext_crop_pct": ("ConvNextImageProcessor", {"size": {"shortest_edge": 224}, "crop_pct": 0.875}),
    "convnext_384_warp": ("ConvNextImageProcessor", {"size": {"shortest_edge": 384}}),
    "clip": ("CLIPImageProcessor", {"image_mean": CLIP_MEAN, "image_std": CLIP_STD}),
    "deit": ("DeiTImageProcessor", {}),
    "mobilenet_v2_nearest": ("MobileNetV2ImageProcessor", {"resample": 0}),
    "vit_lanczos": ("ViTImageProcessor", {"resample": 1}),
}


def _hf_processor(cls_name: str, backend: str, kwargs: dict):
    import transformers

    return getattr(transformers, cls_name + ("Pil" if backend == "pil" else ""))(**kwargs)


def _levels(ref: np.ndarray, got: np.ndarray, std) -> float:
    return float(np.abs(ref - got).max() * min(float(np.min(np.abs(std))), 1.0) * 255)


@pytest.mark.parametrize("backend", ["pil", "torchvision"])
@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_huggingface_processor_config_gives_the_processors_pixels(case, backend, tmp_path, photos):
    cls_name, kwargs = HF_CASES[case]
    proc = _hf_processor(cls_name, backend, kwargs)
    proc.save_pretrained(tmp_path)  # a real preprocessor_config.json
    pre = sources.from_huggingface(tmp_path / "preprocessor_config.json", backend=backend)
    for name in ("chelsea", "astronaut", "coffee", "rocket"):
        img = photos[name]
        ref = proc(images=Image.fromarray(img), return_tensors="np")["pixel_values"][0]
        got = _run(pre, ref.shape, img)
        assert _levels(ref, got, proc.image_std) <= 1e-3, (case, backend, name)


def _run(pre: sources.Preprocessing, chw, img) -> np.ndarray:
    from edgeinfer.pipeline.preprocess import Preprocessor
    from edgeinfer.spec import SCHEMA, InputSpec, OutputSpec, Spec

    spec = Spec(schema=SCHEMA, steps=pre.steps, decode=pre.decode, input=InputSpec("x", (None, *chw)),
                output=OutputSpec("y")).validate()
    return Preprocessor(spec)(img, color="rgb")


def test_the_two_huggingface_backends_are_different_pixels(tmp_path, photos):
    """Why the backend is recorded: PIL and torchvision resizes of the same config disagree."""
    proc = _hf_processor("CLIPImageProcessor", "pil", {})
    proc.save_pretrained(tmp_path)
    img = photos["astronaut"]
    ref = proc(images=Image.fromarray(img), return_tensors="np")["pixel_values"][0]
    wrong = _run(sources.from_huggingface(tmp_path, backend="torchvision"), ref.shape, img)
    assert _levels(ref, wrong, proc.image_std) >= 1.0


def test_huggingface_backend_resolution(tmp_path):
    cfg = {"image_processor_type": "ViTImageProcessorFast", "size": {"height": 224, "width": 224}}
    assert sources.from_huggingface(cfg).provenance["huggingface_backend"] == "torchvision"
    cfg["image_processor_type"] = "ViTImageProcessorPil"
    assert sources.from_huggingface(cfg).provenance["huggingface_backend"] == "pil"
    cfg["image_processor_type"] = "ViTImageProcessor"  # transformers 5 (installed here) runs it on torchvision
    import transformers

    want = "torchvision" if int(transformers.__version__.split(".")[0]) >= 5 else "pil"
    assert sources.from_huggingface(cfg).provenance["huggingface_backend"] == want
    for flag in ("do_pad", "flip_channel_order"):
        with pytest.raises(SpecError, match=flag):
            sources.from_huggingface({**cfg, flag: True})
    with pytest.raises(SpecError, match="crop_pct"):
        sources.from_huggingface({**cfg, "crop_pct": 0.9})


def test_device_side_sources_need_neither_torch_nor_transformers(tmp_path):
    """A runtime-only environment reads data sources as sidecars; there a bare processor class name cannot
    say which resize ran, so the backend is asked for."""
    python = os.environ.get("EDGEINFER_OPENVINO_PYTHON", ".venv-openvino/bin/python")
    if not Path(python).exists():
        pytest.skip("the runtime-only environment (.venv-openvino, made by ./edge test) is not here")
    cfg = tmp_path / "preprocessor_config.json"
    cfg.write_text(json.dumps({"image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 224}}))
    code = ("import sys; from edgeinfer import sources\n"
            "try:\n    sources.from_huggingface(sys.argv[1])\nexcept sources.SpecError as e:\n    print(e)\n"
            "print(sources.from_huggingface(sys.argv[1], backend='pil').provenance['huggingface_backend'])\n"
            "import edgeinfer, numpy as np\n"
            "m = edgeinfer.load(sys.argv[2], spec=sys.argv[1], hf_backend='pil', device='cpu')\n"
            "print(m.predict(np.full((300, 400, 3), 90, np.uint8)).scores.shape)\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    res = subprocess.run([python, "-c", code, str(cfg), str(LIGHT / "light_shufflenet.onnx")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert "backend='pil' or 'torchvision'" in lines[0] and lines[1] == "pil"
    assert lines[2] == "(1000,)" and lines[3] == "False False"


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory) -> Path:
    """A Hugging Face ConvNeXT written by plain torch.onnx.export, with its processor and config beside it."""
    import transformers

    folder = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    labels = {0: "cat", 1: "person", 2: "cup", 3: "rocket"}
    config = transformers.ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_labels=4,
                                         id2label=labels, label2id={v: k for k, v in labels.items()})
    net = transformers.ConvNextForImageClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, pixel_values):
            return self.net(pixel_values=pixel_values).logits

    torch.onnx.export(Logits().eval(), (torch.zeros(1, 3, 224, 224),), str(folder / "model.onnx"),
                      input_names=["pixel_values"], output_names=["logits"])
    config.save_pretrained(folder)
    transformers.ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.875).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_huggingface_model_with_its_processor_config_beside_it(hf_model_dir, photos, tmp_path):
    import transformers

    model = edgeinfer.load(hf_model_dir / "model.onnx", spec=hf_model_dir, hf_backend="pil")
    assert model.labels == ("cat", "person", "cup", "rocket") and model.spec.output.kind == "logits"
    proc = transformers.ConvNextImageProcessorPil.from_pretrained(hf_model_dir)
    session = _ort(hf_model_dir / "model.onnx")
    outs = []
    for name in ("chelsea", "astronaut", "coffee", "rocket"):
        pixel_values = proc(images=Image.fromarray(photos[name]), return_tensors="np")["pixel_values"]
        logits = session.run(None, {"pixel_values": pixel_values.astype(np.float32)})[0][0]
        ref = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        pred = model.predict(photos[name], color="rgb")
        np.testing.assert_allclose(pred.scores, ref, atol=1e-6)
        outs.append(pred.scores)
    assert np.std(outs, axis=0).max() > 1e-3, "outputs should depend on the image"
    # attach writes the same spec into a copy
    spec = attach_spec(hf_model_dir / "model.onnx", tmp_path / "m.onnx", hf_model_dir / "preprocessor_config.json",
                       hf_backend="pil")
    assert edgeinfer.load(tmp_path / "m.onnx").spec == spec == model.spec
