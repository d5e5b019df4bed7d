"""Engines beside ONNX Runtime (edgeinfer.engines): OpenVINO, ncnn and LiteRT run the graph of real models trained
here -- a photo classifier, the shapes detector, the LR-ASPP segmenter, an embedder -- with edgeinfer's own
preprocessing and decoders, equal to ONNX Runtime within each task's gate; the files ``convert`` writes are bound to
the spec, and refused (or never written) when they should be.

LiteRT's converter, onnx2tf, needs a Python >= 3.12 of its own: ``./edge test`` makes ``.venv-litert`` and names it
in $EDGEINFER_LITERT_PYTHON (the default here, when the variable is unset).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeinfer
from conftest import edit_spec
from converters.engines import EngineRefused, EngineUnsupported, convert, samples
from edgeinfer import engines
from edgeinfer.engines import base
from test_embeddings import embedder  # noqa: F401  (fixture)
from test_semantic_segmentation import _photo_frames, lraspp  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("EDGEINFER_LITERT_PYTHON", str(ROOT / ".venv-litert" / "bin" / "python"))


ENGINES = ("openvino", "ncnn", "litert")


def _converter_here(engine):
    """Skip where the engine's converter is missing from this machine: onnx2tf needs a Python >= 3.12, which
    ``./edge test`` makes .venv-litert with when it finds one."""
    if engine == "litert" and not Path(os.environ["EDGEINFER_LITERT_PYTHON"]).exists():
        pytest.skip(f"no onnx2tf Python at $EDGEINFER_LITERT_PYTHON={os.environ['EDGEINFER_LITERT_PYTHON']} "
                    "(./edge test makes .venv-litert where a Python >= 3.12 is found)")


def _same_within_gate(path, frames, engine="openvino", tmp=None, **load):
    """ONNX Runtime and ``engine`` on the same frames, judged by the task's gate. OpenVINO reads the .onnx; ncnn and
    LiteRT run only their own files, which convert makes first (in ``tmp``, beside a copy of the model)."""
    if engines.entry(engine).needs_artifact:
        _converter_here(engine)
        src = tmp / Path(path).name
        shutil.copy(path, src)
        assert convert(src, engine=engine, images=frames[:2]).written
        path = src
    ref = edgeinfer.load(path)
    other = edgeinfer.load(path, engine=engine, **load)
    assert (other.engine, ref.engine) == (engine, "onnxruntime") and other.providers[0].startswith(engine)
    verdict = ref.task.gate(samples(ref, frames), samples(other, frames))
    assert verdict.passed, verdict.figures
    return ref, other, verdict


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The committed shapes detector (tests/data/detectors/shapes), exported by Ultralytics' own exporter."""
    from tests.material import shapes

    path = shapes.export(shapes.train("detect"), tmp_path_factory.mktemp("engine-det"), variants=["raw"])["raw"]
    return path, [f.image for f in shapes.test_frames("detect").values()]


def test_openvino_classifiers_equal_onnxruntime_and_convert_writes_a_bound_ir(exported, photos, photo_files,
                                                                               tmp_path):
    frames = [np.ascontiguousarray(p[..., ::-1]) for p in photos.values()]
    for arch in ("resnet18", "mobilenet_v3_small"):
        src = tmp_path / f"{arch}.onnx"
        shutil.copy(exported[arch][1], src)
        ref, ov, verdict = _same_within_gate(src, frames, threads=2)
        assert verdict.figures["top1_agreement"] == 1.0
        report = convert(src, engine="openvino", images=str(photo_files[0].parent))
        folder = base.artifact_dir(src, "openvino")
        assert report.written and report.passed and Path(report.folder) == folder
        assert sorted(p.name for p in folder.iterdir()) == ["edgeinfer.json", "model.bin", "model.xml"]
        record = json.loads((folder / "edgeinfer.json").read_text())
        assert record["spec_sha256"] == base.spec_hash(ref.spec) and record["parity"]["passed"]
        assert record["parity"]["images"] == report.images > 1  # the self-test image and the photos
        ir = edgeinfer.load(src, engine="openvino")
        assert ir.session.artifact["engine_version"] == ir.engine_version
        assert ir.self_test().passed
        for frame in frames:
            a, b = ref.predict(frame), ir.predict(frame)
            assert a.top_k[0][0] == b.top_k[0][0] and np.abs(a.scores - b.scores).max() <= 1e-3


def test_ncnn_classifiers_equal_onnxruntime(exported, photos, tmp_path):
    frames = [np.ascontiguousarray(p[..., ::-1]) for p in photos.values()]
    for arch in ("resnet18", "mobilenet_v3_small"):
        _, ncnn, verdict = _same_within_gate(exported[arch][1], frames, "ncnn", tmp_path, threads=2,
                                             session_config={"openmp_blocktime": "0"})
        assert verdict.figures["top1_agreement"] == 1.0 and ncnn.self_test().passed
        assert ncnn.session.net.opt.openmp_blocktime == 0 and ncnn.session.net.opt.num_threads == 2
    with pytest.raises(edgeinfer.ModelError, match="not an ncnn option"):
        edgeinfer.load(tmp_path / "mobilenet_v3_small.onnx", engine="ncnn", session_config={"spin": "0"})


def test_litert_classifiers_equal_onnxruntime_from_any_thread_and_its_layout_is_checked_at_load(exported, photos,
                                                                                                tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    frames = [np.ascontiguousarray(p[..., ::-1]) for p in photos.values()]
    for arch in ("resnet18", "mobilenet_v3_small"):
        ref, lite, verdict = _same_within_gate(exported[arch][1], frames, "litert", tmp_path, threads=2)
        assert verdict.figures["top1_agreement"] == 1.0 and lite.self_test().passed
        assert lite.providers == ("litert:xnnpack",) and lite.engine_version == lite.session.artifact["engine_version"]
        # the .tflite takes the image channels-last; the model sees the ONNX graph's NCHW input
        layout = lite.session.artifact["litert"]
        assert layout["inputs"] == [{"name": "input", "tensor": "input", "perm": [0, 2, 3, 1]}]
        assert lite.session.get_inputs()[0].shape == (None, 3, 224, 224)  # the batch stays dynamic
        # an Interpreter per thread: four threads at once give what one gives
        want = [lite.predict(f).scores for f in frames]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda f: lite.predict(f).scores, frames * 3))
        assert all(np.array_equal(g, want[i % len(frames)]) for i, g in enumerate(got))
    # LiteRT's own kernels without XNNPACK: the same graph, said in the providers
    plain = edgeinfer.load(tmp_path / "mobilenet_v3_small.onnx", engine="litert", session_config={"xnnpack": "0"})
    assert plain.providers == ("litert:cpu",)
    assert ref.task.gate(samples(ref, frames), samples(plain, frames)).passed
    with pytest.raises(edgeinfer.ModelError, match="not LiteRT options"):
        edgeinfer.load(tmp_path / "mobilenet_v3_small.onnx", engine="litert", session_config={"spin": "0"})
    # a record whose axis order does not fit the .tflite is refused at load, with the command that remakes it
    record = base.artifact_dir(tmp_path / "mobilenet_v3_small.onnx", "litert") / "edgeinfer.json"
    data = json.loads(record.read_text())
    data["litert"]["inputs"][0]["perm"] = [0, 1, 2, 3]
    record.write_text(json.dumps(data))
    with pytest.raises(edgeinfer.ModelError, match=r"graph inputs are .*Re-run edgeinfer convert"):
        edgeinfer.load(tmp_path / "mobilenet_v3_small.onnx", engine="litert")


def test_litert_convert_without_onnx2tf_or_with_f16_weights_writes_nothing(exported, tmp_path,
                                                                                       monkeypatch):
    src = tmp_path / "m.onnx"
    shutil.copy(exported["mobilenet_v3_small"][1], src)
    monkeypatch.setenv("EDGEINFER_LITERT_PYTHON", sys.executable)  # the runtime's venv: no onnx2tf there
    with pytest.raises(edgeinfer.DependencyError, match=r"has no onnx2tf.*python3.12 -m venv .venv-litert"):
        convert(src, engine="litert")
    # onnx2tf's float16 .tflite computes in float16, which LiteRT's CPU kernels refuse: refused before any work
    with pytest.raises(EngineUnsupported, match="weights 'f16' for litert .*nothing written"):
        convert(src, engine="litert", weights="f16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_litert_without_its_file_says_how_to_make_it(exported):
    with pytest.raises(edgeinfer.ModelError, match="edgeinfer convert .* --engine litert"):
        edgeinfer.load(exported["resnet18"][1], engine="litert")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_detector_boxes_equal_onnxruntime_within_half_a_pixel(detector, engine, tmp_path):
    path, frames = detector
    ref, other, verdict = _same_within_gate(path, frames, engine, tmp_path)
    assert sum(verdict.figures["detections"]) > 0 and verdict.figures["box_max_abs_diff"] <= 0.5


@pytest.mark.slow
def test_openvino_detector_ir_gives_the_same_boxes(detector, tmp_path):
    path, frames = detector
    ref = edgeinfer.load(path)
    src = tmp_path / path.name
    shutil.copy(path, src)
    report = convert(src, engine="openvino", images=frames)  # no self-test in an Ultralytics file: the frames
    assert report.written and report.images == len(frames)
    ir = edgeinfer.load(src, engine="openvino")
    for frame in frames:
        a, b = ref.detect([frame])[0], ir.detect([frame])[0]
        assert len(a) == len(b) and (a.class_id == b.class_id).all()
        assert np.abs(a.xyxy - b.xyxy).max() <= 0.5


@pytest.mark.slow
@pytest.mark.parametrize("engine", ("openvino", "litert"))  # ncnn cannot run it (below)
def test_segmenter_class_maps_equal_onnxruntime(lraspp, engine, tmp_path):  # noqa: F811
    _, path, _, frames, scenes = lraspp
    images = list(frames.values()) + [np.ascontiguousarray(s[..., ::-1]) for s in scenes]
    _, other, verdict = _same_within_gate(path, images, engine, tmp_path)
    assert verdict.figures["min_pixel_agreement"] >= 0.999
    assert other.session.get_inputs()[0].shape[2:] == (None, None)  # dynamic size, every photo at its own


def test_ncnn_refuses_the_dynamic_size_segmenter_and_writes_nothing(lraspp, tmp_path):  # noqa: F811
    # LR-ASPP resizes its logits to the input's own size: pnnx keeps that as a pnnx.Expression ncnn cannot run
    src = tmp_path / "lraspp.onnx"
    shutil.copy(lraspp[1], src)
    with pytest.raises(EngineUnsupported, match="pnnx.Expression.*nothing written"):
        convert(src, engine="ncnn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lraspp.onnx"]


@pytest.mark.parametrize("engine", ENGINES)
def test_embedder_vectors_equal_onnxruntime(embedder, photos, engine, tmp_path):  # noqa: F811
    _, path, _ = embedder
    _, other, verdict = _same_within_gate(path, [np.ascontiguousarray(p[..., ::-1]) for p in photos.values()],
                                          engine, tmp_path)
    assert verdict.figures["min_cosine"] >= 0.9999
    assert other.self_test().passed


@pytest.mark.parametrize("engine", ("openvino", "litert"))
def test_an_artifact_made_for_another_spec_is_refused(exported, engine, tmp_path):
    _converter_here(engine)
    src = tmp_path / "m.onnx"
    shutil.copy(exported["mobilenet_v3_small"][1], src)
    convert(src, engine=engine)
    edited = tmp_path / "edited" / "m.onnx"
    edited.parent.mkdir()
    edit_spec(src, edited, lambda spec: spec.update(labels=[f"renamed-{x}" for x in spec["labels"]]))
    shutil.copytree(base.artifact_dir(src, engine), base.artifact_dir(edited, engine))
    with pytest.raises(edgeinfer.ModelError, match=f"hashes to .*edgeinfer convert .* --engine {engine}"):
        edgeinfer.load(edited, engine=engine)
    assert edgeinfer.load(edited).engine == "onnxruntime"  # the .onnx itself still runs
    shutil.rmtree(base.artifact_dir(edited, engine))
    if engines.entry(engine).needs_artifact:  # LiteRT cannot read the .onnx: it says how to remake its file
        with pytest.raises(edgeinfer.ModelError, match=f"--engine {engine}"):
            edgeinfer.load(edited, engine=engine)
    else:
        assert edgeinfer.load(edited, engine=engine).session.artifact is None  # read from the .onnx


# a gate stricter than the engine meets: OpenVINO's half-size weights move this classifier's probabilities by about
# 5e-4 (within the default 1e-3, so f16 alone passes here); LiteRT's float32 XNNPACK kernels sum in another order
# than ONNX Runtime's and move them by about 5e-7
@pytest.mark.parametrize("engine, weights, atol", [("openvino", "f16", 1e-6), ("litert", "f32", 1e-9)])
def test_a_candidate_outside_the_gate_writes_nothing(exported, photo_files, engine, weights, atol, tmp_path):
    _converter_here(engine)
    src = tmp_path / "m.onnx"
    shutil.copy(exported["resnet18"][1], src)
    with pytest.raises(EngineRefused, match="nothing written") as info:
        convert(src, engine=engine, images=str(photo_files[0].parent), weights=weights, tolerances={"atol": atol})
    assert not info.value.report.passed and info.value.report.parity["max_abs_diff"] > atol
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no artifact, no staging folder left


@pytest.mark.parametrize("engine", ENGINES)
def test_a_missing_engine_package_says_the_pip_command(exported, engine):
    code = (f"import sys; sys.modules[{engines.entry(engine).package!r}] = None\n"  # as on a device without the extra
            "import edgeinfer\n"
            "try:\n    edgeinfer.load(sys.argv[1], engine=sys.argv[2])\n"
            "except edgeinfer.DependencyError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(exported["resnet18"][1]), engine], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert f"pip install 'edgeinfer[{engine}]'" in done.stdout, done.stderr[-2000:]


def test_ncnn_without_its_files_says_how_to_make_them(exported):
    with pytest.raises(edgeinfer.ModelError, match="edgeinfer convert .* --engine ncnn"):
        edgeinfer.load(exported["resnet18"][1], engine="ncnn")


def test_import_edgeinfer_loads_no_engine_package():
    code = "import sys, edgeinfer; print([m for m in ('openvino', 'ai_edge_litert', 'ncnn') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def test_cli_convert_bench_and_the_old_ray_spelling(exported, photo_files, tmp_path):
    src = tmp_path / "m.onnx"
    shutil.copy(exported["mobilenet_v3_small"][1], src)
    cli = [sys.executable, "-m", "edgeinfer"]
    done = subprocess.run(cli + ["convert", str(src), "--engine", "openvino", "--json"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["written"] and base.artifact_dir(src, "openvino").is_dir()
    out = tmp_path / "bench.json"
    done = subprocess.run(cli + ["bench", str(src), "--engine", "openvino", "--runs", "3", "--warmup", "1",
                                 "--no-cold-start", "--json", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    env = json.loads(out.read_text())["environment"]
    assert env["engine"] == "openvino" and env["engine_version"] == edgeinfer.load(src, engine="openvino").engine_version
    done = subprocess.run(cli + ["predict", str(src), str(photo_files[0]), "--engine", "local", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "--on local" in done.stderr, done.stderr[-2000:]
    assert json.loads(done.stdout)[0]["image"] == str(photo_files[0])


def test_auto_takes_the_profiles_engines_in_order_and_says_each_one_skipped(exported, photos, tmp_path):
    from edgeinfer.engines import EngineFallbackWarning
    from edgeinfer.errors import DependencyError
    from edgeinfer.providers import ProviderFallbackWarning

    src = tmp_path / "resnet18.onnx"
    shutil.copy(exported["resnet18"][1], src)
    frame = np.ascontiguousarray(next(iter(photos.values()))[..., ::-1])
    # intel-openvino prefers OpenVINO's own runtime, installed here: no fallback
    ov = edgeinfer.load(src, engine="auto", device="intel-openvino")
    assert ov.engine == "openvino"
    # raspberry-pi-5 prefers ncnn, which runs only converted files: none yet, so ONNX Runtime, said
    with pytest.warns(EngineFallbackWarning, match=r"'ncnn': no ncnn files beside the model .*--engine ncnn"):
        with pytest.warns(ProviderFallbackWarning):  # and its XNNPACK provider is not in this ORT build
            pi = edgeinfer.load(src, engine="auto", device="raspberry-pi-5")
    assert pi.engine == "onnxruntime"
    with pytest.raises(DependencyError, match="prefers engine 'ncnn'"):
        edgeinfer.load(src, engine="auto", device="raspberry-pi-5", strict=True)
    assert convert(src, engine="ncnn", images=[frame]).written
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pi = edgeinfer.load(src, engine="auto", device="raspberry-pi-5")
    assert pi.engine == "ncnn" and not [w for w in seen if issubclass(w.category, EngineFallbackWarning)]
    ort_model = edgeinfer.load(src)
    assert pi.predict(frame).index == ov.predict(frame).index == ort_model.predict(frame).index
    # model.session.run(None, feed) -- ONNX Runtime's own "every output" -- on every engine, as scripts call it
    feed = {ort_model.spec.input.name: ort_model.graph_input(frame)}
    want = ort_model.session.run([ort_model.spec.output.name], feed)[0]
    for model in (ort_model, ov, pi):
        got = model.session.run(None, feed)
        assert len(got) == len(model.session.get_outputs()) and np.abs(got[0] - want).max() <= 1e-3, model.engine
    # a profile naming an engine this runtime does not know is refused by name
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nengines = ["tensorrt-native"]\n[[providers]]\nname = "CPUExecutionProvider"\n')
    with pytest.raises(edgeinfer.ModelError, match="engine: expected one of"):
        edgeinfer.load(src, engine="auto", device=str(bad))
