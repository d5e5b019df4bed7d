"""One house for every task: the task table is the only dispatch, the three stages carry the images' sizes,
and the device side never reaches into the workstation side or the CLI.

Real graphs exported here with torch (a CNN that takes the original image size as a second input; the same
CNN's pooled features as an embedder), real photos, real ONNX Runtime sessions, the real CLI and server.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgeinfer
from edgeinfer import tasks

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SIZE = 48
PLAIN = {"size": SIZE, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
LABELS = ["a", "b", "c", "d"]


def _cnn(out: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(16, out))


class SizedClassifier(torch.nn.Module):
    """Class scores that depend on the original image's aspect ratio, fed as a second input ``orig_hw``."""

    def __init__(self):
        super().__init__()
        self.net = _cnn(len(LABELS))

    def forward(self, x, orig_hw):
        return self.net(x) + 2.0 * torch.log(orig_hw[:, 0:1] / orig_hw[:, 1:2])


def _export(module, example, path, names):
    with torch.no_grad():
        torch.onnx.export(module.eval(), example, str(path), input_names=list(names), output_names=["out"],
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "out": {0: "batch"}}, opset_version=18,
                          dynamo=False)
    return path


@pytest.fixture(scope="module")
def sized(tmp_path_factory):
    """The extra-input classifier with its spec in the file (as every tool reads it)."""
    from converters import attach_spec

    d = tmp_path_factory.mktemp("sized")
    raw = _export(SizedClassifier(), (torch.zeros(1, 3, SIZE, SIZE), torch.tensor([[480.0, 640.0]])),
                  d / "raw.onnx", ("input", "orig_hw"))
    attach_spec(raw, d / "sized.onnx", {**PLAIN, "extra_inputs": [{"name": "orig_hw", "rule": "orig_hw"}]},
                labels=LABELS)
    return d / "sized.onnx"


@pytest.fixture(scope="module")
def photos(photo_files):
    """Photos of several aspect ratios, so the second input changes the scores."""
    return photo_files[:5]


def _folder(photos, folder: Path) -> Path:
    folder.mkdir()
    for p in photos:
        shutil.copy(p, folder / p.name)
    return folder


def _top(pred):
    return pred.index, round(pred.score, 5)


def test_an_extra_input_model_gives_predicts_results_in_stream_bench_and_check(sized, photos, tmp_path):
    model = edgeinfer.load(sized)
    want = [model.predict(p) for p in photos]
    assert len({round(w.score, 4) for w in want}) > 1  # the sizes reach the graph: scores differ by aspect

    # the stream, over a video of the photos (one frame size: each frame's own size still reaches the graph)
    video = tmp_path / "clip.avi"
    frames = [cv2.resize(cv2.imread(str(p)), (320, 200)) for p in photos]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 200))
    for f in frames:
        writer.write(f)
    writer.release()
    from edgeinfer.tools.stream import stream

    got = [(frame, pred) for frame, pred, _ in stream(model, str(video), live=False)]
    assert len(got) == len(frames)
    for frame, pred in got:
        assert _top(pred) == _top(model.predict(frame))

    from edgeinfer.tools.bench import bench

    result = bench(sized, batches=(1, 2), runs=2, warmup=0, measure_cold_start=False, images=photos[0].parent)
    assert [r["batch"] for r in result.to_dict()["batches"]] == [1, 2]

    report = edgeinfer.check(sized, images=photos)
    assert report.measured["images"] == len(photos) and not [f for f in report.findings if f.severity == "error"]


def test_an_extra_input_model_through_the_cli_and_the_server(sized, photos, tmp_path):
    model = edgeinfer.load(sized)
    folder = _folder(photos, tmp_path / "in")
    out = tmp_path / "preds.jsonl"
    done = subprocess.run([sys.executable, "-m", "edgeinfer", "predict", str(sized), str(folder), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(photos)
    for row in rows:
        want = model.predict(folder / Path(row["image"]).name)
        assert (row["top_k"][0]["index"], round(row["top_k"][0]["score"], 5)) == _top(want)

    from test_serve import Served

    server = Served(sized, log=tmp_path / "serve.log")
    try:
        for p in photos[:2]:
            status, got = server.json("POST", "/predict", p.read_bytes(), {"Content-Type": "image/png"
                                                                          if p.suffix == ".png" else "image/jpeg"})
            assert status == 200, got
            top = got["results"][0]["top_k"][0] if "results" in got else got["top_k"][0]
            assert (top["index"], round(top["score"], 5)) == _top(model.predict(p))
        status, info = server.json("GET", "/model")
        assert status == 200 and info == json.loads(json.dumps(model.to_dict()))
    finally:
        server.stop()


@pytest.mark.slow
def test_an_extra_input_model_on_ray(sized, photos, tmp_path):
    model = edgeinfer.load(sized)
    folder = _folder(photos, tmp_path / "in")
    out = tmp_path / "preds.jsonl"
    done = subprocess.run([sys.executable, "-m", "edgeinfer", "predict", str(sized), str(folder), "--on", "ray",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(photos)
    for row in rows:
        top = row["top_k"][0]
        assert (top["index"], round(top["score"], 5)) == _top(model.predict(folder / Path(row["image"]).name))


def test_the_stages_carry_the_sizes_and_refuse_a_bare_batch(sized, photos):
    model = edgeinfer.load(sized)
    prepared = model.prepare(photos[:2])
    assert [tuple(s) for s in prepared.sizes] == [cv2.imread(str(p)).shape[:2] for p in photos[:2]]
    got = model.finish(prepared, model.infer(prepared))
    assert [_top(g) for g in got] == [_top(model.predict(p)) for p in photos[:2]]
    with pytest.raises(TypeError, match="Prepared"):
        model.infer(prepared.batch)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    d = tmp_path_factory.mktemp("embed")
    return _export(_cnn(16), (torch.zeros(1, 3, SIZE, SIZE),), d / "embed.onnx", ("input",))


def test_a_plain_source_with_task_embedding_stays_an_embedder(embedder, photos):
    model = edgeinfer.load(embedder, spec={**PLAIN, "task": "embedding"})
    assert model.spec.task == "embedding" and model.spec.output.kind == "embedding"
    emb = model.predict(photos[0])
    assert isinstance(emb, edgeinfer.Embedding) and emb.dim == 16
    with torch.no_grad():  # the model's own vector, not softmaxed scores
        x = torch.from_numpy(model.preprocess(photos[0])[None])
        np.testing.assert_allclose(emb.vector, _cnn(16).eval()(x)[0].numpy(), atol=1e-5)


def test_an_embedder_gets_its_own_doctor_checks_never_the_classifiers(embedder, photos, tmp_path):
    from converters import attach_spec

    healthy = tmp_path / "healthy.onnx"
    attach_spec(embedder, healthy, {**PLAIN, "task": "embedding"})
    report = edgeinfer.check(healthy, images=photos)
    assert "collapse" not in report.codes() and "embedding_collapse" not in report.codes(), report.codes()
    assert "top1_share_of_most_common_class" not in report.measured and "embedding_min_cosine" in report.measured

    class Constant(torch.nn.Module):  # ignores its input: every image the same direction
        def forward(self, x):
            return torch.ones(x.shape[0], 16) + 0.0 * x.mean(dim=(1, 2, 3))[:, None]

    flat = _export(Constant(), (torch.zeros(1, 3, SIZE, SIZE),), tmp_path / "flat_raw.onnx", ("input",))
    attach_spec(flat, tmp_path / "flat.onnx", {**PLAIN, "task": "embedding"})
    codes = edgeinfer.check(tmp_path / "flat.onnx", images=photos).codes()
    assert "embedding_collapse" in codes and "collapse" not in codes


def _task_name_tests(path: Path) -> list[str]:
    """Comparisons of something called ``task`` with a task table name (``task == "obb"``, ``task in (...)``)."""
    names = set(tasks.TABLE)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        mentions_task = any((isinstance(s, ast.Name) and s.id == "task") or
                            (isinstance(s, ast.Attribute) and s.attr == "task") for s in sides)
        consts = {c.value for s in sides for c in ast.walk(s) if isinstance(c, ast.Constant)}
        if mentions_task and consts & names:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_module_outside_the_task_table_tests_a_task_name():
    files = [p for p in (ROOT / "edgeinfer").rglob("*.py") if "tasks" not in p.relative_to(ROOT / "edgeinfer").parts]
    files += list((ROOT / "converters").glob("*.py"))
    assert [f for p in files for f in _task_name_tests(p)] == []


def test_the_import_contracts_hold():
    """The tiers, the closed device side and the CLI on top, as pyproject.toml's import-linter contracts say."""
    exe = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(exe)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "0 broken" in done.stdout
