"""Embeddings: a trained classifier's penultimate layer exported as an embedder, vectors equal to torch's
(cosine >= 0.9999) on real photo files, `edgeinfer embed` writing vectors that reload with their names."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

import edgeinfer
from edgeinfer.tasks import embedding

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def embedder(exported, imagenet_transform, photos, tmp_path_factory):
    from converters import export_embedder

    trained = copy.deepcopy(exported["resnet18"][0])
    trained.fc = torch.nn.Identity()  # the 512-d penultimate layer of the photo classifier trained here
    path = tmp_path_factory.mktemp("embedder") / "resnet18-embed.onnx"
    report = export_embedder(trained.eval(), path, transform=imagenet_transform, images=list(photos.values()))
    return trained, path, report


def test_embedder_vectors_equal_torch_and_tell_photos_apart(embedder, imagenet_transform, photo_files):
    from PIL import Image

    trained, path, report = embedder
    assert report.min_cosine >= 0.9999
    model = edgeinfer.load(path)
    assert model.spec.task == "embedding" and model.self_test().passed
    got = model.predict_batch([str(p) for p in photo_files])
    for p, emb in zip(photo_files, got):
        with Image.open(p) as f, torch.no_grad():
            ref = torch.nn.functional.normalize(trained(imagenet_transform(f.convert("RGB"))[None]), dim=1)[0].numpy()
        assert isinstance(emb, edgeinfer.Embedding) and emb.dim == 512 and emb.normalized
        assert abs(np.linalg.norm(emb.vector) - 1) < 1e-5
        assert emb.similarity(ref) >= 0.9999
    sims = edgeinfer.cosine(np.stack([e.vector for e in got]), np.stack([e.vector for e in got]))
    assert np.allclose(np.diag(sims), 1, atol=1e-5)
    assert sims[~np.eye(len(got), dtype=bool)].max() < 0.999  # different photos, different vectors
    d = got[0].to_dict()
    assert d["dim"] == 512 and len(d["vector"]) == 512 and d["normalized"] is True


def test_embed_cli_writes_vectors_that_reload_with_their_names(embedder, exported, photo_files, tmp_path, capsys):
    _, path, _ = embedder
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photo_files[:5]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "vectors.npy"
    done = subprocess.run([sys.executable, "-m", "edgeinfer", "embed", str(path), str(folder), "--out", str(out)],
                          check=True, capture_output=True, text=True)
    assert "1 skipped as unreadable" in done.stderr
    names, vecs = embedding.load(out)
    assert [n.split("/")[-1] for n in names] == sorted(p.name for p in photo_files[:5])
    model = edgeinfer.load(path)
    for name, vec in zip(names, vecs):
        assert edgeinfer.cosine(vec, model.predict(name).vector)[0, 0] >= 0.99999
    from edgeinfer.cli import main

    assert main(["embed", str(exported["resnet18"][1]), str(folder), "--out", str(tmp_path / "x.npy")]) != 0
    assert "embed needs an embedding model" in capsys.readouterr().err
