"""Exporting a PyTorch classifier to one self-describing ONNX file, then checking it against torch."""

from __future__ import annotations

import base64
import dataclasses
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from converters.attach import write_with_spec
from converters.compare import ParityReport, compare, load_like_training
from converters.transforms import probe_images, spec_from_transform
from edgeinfer.tasks import classification as postprocess
from edgeinfer.errors import ExportError
from edgeinfer.spec import OutputSpec, SelfTest, Spec

OPSET = 18


class ExportWarning(UserWarning):
    """Something about the model was changed or doubtful at export time."""


@dataclass(frozen=True)
class ExportReport:
    """What export produced and how closely the ONNX model matches torch.

    ``export_*`` compare torch with ONNX Runtime on the same tensors (the user's transform);
    ``deploy_*`` compare torch fed by the user's transform with the edgeinfer runtime fed the raw image.
    """

    path: str
    spec: Spec
    parity: ParityReport
    switched_to_eval: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def images(self) -> int:
        return self.parity.images

    @property
    def export_max_abs_diff(self) -> float:
        return self.parity.candidate("export").max_abs_diff

    @property
    def export_top1_agreement(self) -> float:
        return self.parity.candidate("export").top1_agreement

    @property
    def deploy_max_abs_diff(self) -> float:
        return self.parity.candidate("deployment").max_abs_diff

    @property
    def deploy_top1_agreement(self) -> float:
        return self.parity.candidate("deployment").top1_agreement

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "images": self.images,
                "export_max_abs_diff": self.export_max_abs_diff,
                "export_top1_agreement": self.export_top1_agreement,
                "deploy_max_abs_diff": self.deploy_max_abs_diff,
                "deploy_top1_agreement": self.deploy_top1_agreement,
                "switched_to_eval": self.switched_to_eval, "warnings": list(self.warnings),
                "parity": self.parity.to_dict(), "spec": self.spec.to_dict()}


def _pil_images(images: Iterable[Any] | None, loader_color: str) -> list[tuple[str, Any]]:
    """Load verification images as the training loader would (PIL, convert to RGB/L), with names."""
    mode = "RGB" if loader_color == "rgb" else "L"
    if images is None:
        return [(f"probe{i}", im) for i, im in enumerate(probe_images(loader_color))]
    out = [(str(im) if isinstance(im, (str, os.PathLike)) else f"image{i}", load_like_training(im, mode))
           for i, im in enumerate(images)]
    if not out:
        raise ExportError("export: expected at least one verification image, found none.")
    return out


def selftest_image() -> np.ndarray:
    """A small deterministic RGB image with gradients and edges, for the spec's self-test vector."""
    y, x = np.mgrid[0:96, 0:128]
    r = (x * 2) % 256
    g = (y * 255) // 95
    b = (((x // 16) + (y // 16)) % 2) * 200 + 20
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def _selftest_png(rgb: np.ndarray) -> Any:
    """The self-test image as PNG bytes (the spec stores it base64)."""
    import cv2

    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ExportError("could not encode the self-test image as PNG with this OpenCV build.")
    return png


def export(model: Any, path: str | os.PathLike, *, transform: Any, labels: Sequence[str] | None = None,
           images: Iterable[Any] | None = None, output_kind: str = "auto", loader_color: str = "rgb",
           input_name: str = "input", output_name: str = "logits", opset: int = OPSET,
           strict: bool = False, tta: Any = None) -> ExportReport:
    """Export ``model`` with the spec of ``transform`` to ``path`` and verify it; return an :class:`ExportReport`.

    The model is put in eval mode (with an :class:`ExportWarning`, or :class:`ExportError` when
    ``strict``), exported with a dynamic batch axis at opset >= 17, and the spec is written into the ONNX
    metadata. Verification runs the user's transform on ``images`` (paths, PIL images or RGB arrays;
    built-in probe images when None) and compares torch with ONNX Runtime and with the edgeinfer runtime.
    ``tta`` (an :class:`edgeinfer.spec.TTA`) records the test-time augmentation the model was validated
    with; ``predict`` then applies it by default.
    """
    import onnx
    import onnxruntime as ort
    import torch

    if opset < 17:
        raise ExportError(f"opset: expected 17 or newer, found {opset}. Older opsets lack ops the exporter needs.")
    from edgeinfer.spec import OUTPUT_KINDS

    if output_kind not in ("auto",) + OUTPUT_KINDS:
        raise ExportError(f"output_kind: expected 'auto' or one of {OUTPUT_KINDS}, found {output_kind!r}.")
    notes: list[str] = []
    switched = bool(model.training)
    if switched:
        msg = ("the model was in train mode (BatchNorm would use batch statistics, Dropout would be active); "
               "exporting it in eval mode. Call model.eval() before export to silence this.")
        if strict:
            raise ExportError(msg.replace("exporting it in eval mode", "refusing with strict=True"))
        warnings.warn(msg, ExportWarning, stacklevel=2)
        notes.append(msg)
    model.eval()

    spec = spec_from_transform(transform, input_name=input_name, output_name=output_name, output_kind="logits",
                               labels=labels, loader_color=loader_color)
    images = list(images) if images is not None else None
    named = _pil_images(images, loader_color)
    with torch.no_grad():
        batch = torch.stack([transform(im) for _, im in named]).float()
        ref_raw = model(batch).detach().cpu().numpy()
    with torch.no_grad():
        again = model(batch).detach().cpu().numpy()
        singles = np.concatenate([model(batch[i:i + 1]).detach().cpu().numpy() for i in range(batch.shape[0])])
    for problem, diff in (("outputs change between two identical calls (a random op is active)",
                           float(np.max(np.abs(again - ref_raw)))),
                          ("an image's output depends on the other images in its batch (BatchNorm using batch "
                           "statistics?)", float(np.max(np.abs(singles - ref_raw))))):
        if diff > 1e-4:
            msg = f"in eval mode, {problem}: max difference {diff:.2e}. The exported model will behave so too."
            if strict:
                raise ExportError(msg + " Refusing with strict=True.")
            warnings.warn(msg, ExportWarning, stacklevel=2)
            notes.append(msg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable:
        notes.append(f"{trainable} parameters had requires_grad=True; they were exported as constants under "
                     "torch.no_grad (no autograd state is in the graph).")
    kind = output_kind
    if kind == "auto":
        kind = "probabilities" if postprocess.looks_like_probabilities(ref_raw) else "logits"
        if kind == "probabilities":
            notes.append("the model output is already a probability distribution; the runtime will not apply "
                         "softmax again.")
    if labels is not None and ref_raw.shape[1] != len(labels):
        raise ExportError(f"labels: expected one per class ({ref_raw.shape[1]}), found {len(labels)}.")

    # Self-test vector: the torch output for a small deterministic image, through the user's transform.
    st_rgb = selftest_image()
    with torch.no_grad():
        st_in = transform(load_like_training(st_rgb, "RGB" if loader_color == "rgb" else "L"))
        st_out = model(st_in.unsqueeze(0).float()).detach().cpu().numpy().reshape(-1)
    png = _selftest_png(st_rgb)

    out = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        example = batch[:2] if batch.shape[0] >= 2 else torch.cat([batch, batch])
        batch_dim = torch.export.Dim("batch", min=1, max=4096)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(model, (example,), str(raw_path), dynamo=True, opset_version=opset,
                                  input_names=[input_name], output_names=[output_name],
                                  dynamic_shapes=({0: batch_dim},), external_data=False, verbose=False)
            except Exception as exc:
                raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
        proto = onnx.load(str(raw_path))

    # Verify the raw graph first; its tolerance sets the self-test tolerance.
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    st_onnx = sess.run([output_name], {input_name: st_in.unsqueeze(0).numpy().astype(np.float32)})[0].reshape(-1)
    atol = float(max(1e-3, 20 * np.max(np.abs(st_onnx - st_out))))
    spec = dataclasses.replace(
        spec, output=OutputSpec(output_name, kind), tta=tta,
        self_test=SelfTest(base64.b64encode(png.tobytes()).decode("ascii"), tuple(float(v) for v in st_out), atol),
    ).validate()
    write_with_spec(proto, out, spec)

    parity = compare(model, transform, out, images if images is not None else [im for _, im in named])
    return ExportReport(path=str(out), spec=spec, parity=parity, switched_to_eval=switched, warnings=tuple(notes))


@dataclass(frozen=True)
class DetectorExportReport:
    """What :func:`export_detector` wrote and measured: torch vs ONNX Runtime on the device's own inputs."""

    path: str
    spec: Spec
    images: int
    max_abs_diff: float  # raw outputs, torch vs ONNX Runtime, on the preprocessed images
    detections: list[int]  # detections per verification image, on the device side

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "spec": self.spec.to_dict(), "images": self.images,
                "max_abs_diff": self.max_abs_diff, "detections": list(self.detections)}


def export_detector(model: Any, path: str | os.PathLike, *, source: Any, labels: Sequence[str] | None = None,
                    images: Iterable[Any] | None = None, output_names: Sequence[str] = ("output0",),
                    input_name: str = "images", example_hw: tuple[int, int] = (640, 640), opset: int = OPSET,
                    atol: float = 1e-3) -> DetectorExportReport:
    """Export a user's own torch detector with the pre- and postprocessing ``source`` describes.

    ``source`` is what :func:`edgeinfer.importers.resolve` reads for a detector: e.g. ``{"size": 640,
    "letterbox": True, "task": "detection", "postprocess": {"decoder": "dets_labels"}}`` (or a spec). The
    model is exported (eval mode, dynamic batch) with ``output_names`` in the order its decoder reads
    them, the spec is checked against the graph and written in, and the export is verified: the edgeinfer
    preprocessing of ``images`` (BGR frames or files; probe images when None) fed to torch and to ONNX
    Runtime must give the same raw outputs within ``atol``, or nothing is written. ``example_hw`` is the
    size of the tracing example (height and width stay dynamic in the graph).
    """
    import onnx
    import torch

    import edgeinfer
    from converters.attach import attach_spec

    model.eval()
    frames = list(images) if images is not None else [np.asarray(im)[..., ::-1].copy() for im in probe_images()]
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        dummy = torch.zeros(1, 3, *example_hw)
        with torch.no_grad():
            torch.onnx.export(model, (dummy,), str(raw_path), input_names=[input_name], output_names=list(output_names),
                              opset_version=opset, dynamic_axes={input_name: {0: "batch", 2: "height", 3: "width"}},
                              dynamo=False)
        spec = attach_spec(raw_path, Path(tmp) / "with_spec.onnx", source, labels=labels)
        deployed = edgeinfer.load(Path(tmp) / "with_spec.onnx")
        worst, counts = 0.0, []
        for frame in frames:
            x = deployed.preprocess(frame)[None]
            with torch.no_grad():
                ref = model(torch.from_numpy(x))
            ref = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else (ref,))]
            got = deployed.session.run(list(output_names), {input_name: x})
            worst = max(worst, max(float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
                                   for a, b in zip(ref, got)))
            counts.append(len(deployed.predict(frame)))
        if worst > atol:
            raise ExportError(f"export_detector: torch and ONNX Runtime differ by {worst:.3g} on the raw outputs "
                              f"(allowed {atol}); nothing written. Check the model for export-unsafe operations.")
        write_with_spec(onnx.load(str(raw_path)), path, spec)
    return DetectorExportReport(str(path), spec, len(frames), worst, counts)


@dataclass(frozen=True)
class SegmenterExportReport:
    """What :func:`export_segmenter` wrote and measured on the verification images: the logits at the model's
    resolution (torch vs ONNX Runtime through the edgeinfer preprocessing) and the class maps in the
    original frame (torch + the transform + bilinear upsampling + argmax vs :class:`edgeinfer.Segmentation`)."""

    path: str
    spec: Spec
    images: int
    logits_max_abs_diff: float
    pixel_agreement: tuple[float, ...]  # per image, the fraction of frame pixels with the same class

    @property
    def min_pixel_agreement(self) -> float:
        return min(self.pixel_agreement) if self.pixel_agreement else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "images": self.images, "logits_max_abs_diff": self.logits_max_abs_diff,
                "pixel_agreement": list(self.pixel_agreement), "min_pixel_agreement": self.min_pixel_agreement,
                "spec": self.spec.to_dict()}


def _select_output(model: Any, key: str | None) -> Any:
    """A module returning ``model(x)[key]`` (torchvision segmenters return a dict with 'out' and maybe 'aux'),
    or ``.logits`` of a Hugging Face output; the model itself when it returns a tensor."""
    import torch

    class Select(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: Any) -> Any:
            y = self.inner(x)
            if isinstance(y, dict):
                if key not in y:
                    raise ExportError(f"the model returns a dict with {sorted(y)}; expected the key {key!r}. "
                                      "Pass output=... to export_segmenter.")
                return y[key]
            return y.logits if hasattr(y, "logits") else y

    return Select().eval()


def export_segmenter(model: Any, path: str | os.PathLike, *, transform: Any, labels: Sequence[str] | None = None,
                     images: Iterable[Any] | None = None, output: str | None = "out", input_name: str = "input",
                     output_name: str = "logits", opset: int = OPSET, min_agreement: float = 0.999,
                     atol: float = 1e-3) -> SegmenterExportReport:
    """Export a semantic segmenter with its evaluation ``transform`` (e.g. torchvision's
    ``SemanticSegmentation`` preset: the shorter side resized, no crop) to ``path``, and verify it.

    The input's height and width stay dynamic in the graph and the spec, because the transform's output
    size follows the image. ``output`` picks the logits from a dict output (torchvision: ``"out"``). The
    class map reference is torch's: the transform, the model, ``F.interpolate(bilinear,
    align_corners=False)`` of the logits to the image's size, argmax. Verification on ``images`` (paths,
    PIL images or RGB arrays; probe images when None): the logits within ``atol`` and the class maps equal
    on at least ``min_agreement`` of the pixels, or nothing is written. The self-test vector is each
    class's mean logit on the self-test image.
    """
    import onnx
    import torch
    import torch.nn.functional as F

    import edgeinfer

    model.eval()
    net = _select_output(model, output)
    spec = spec_from_transform(transform, input_name=input_name, output_name=output_name, output_kind="logits",
                               labels=labels, dynamic_size=True, task="semantic_segmentation")
    named = _pil_images(list(images) if images is not None else None, "rgb")
    st_rgb = selftest_image()
    with torch.no_grad():
        st_out = net(transform(load_like_training(st_rgb, "RGB")).unsqueeze(0).float())
    if st_out.ndim != 4:
        raise ExportError(f"the model's output has shape {tuple(st_out.shape)}; a semantic segmenter gives class "
                          "logits (B, C, h, w).")
    if labels is not None and st_out.shape[1] != len(labels):
        raise ExportError(f"labels: expected one per class ({st_out.shape[1]}), found {len(labels)}.")
    png = _selftest_png(st_rgb)
    out = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        example = transform(named[0][1]).unsqueeze(0).float()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:  # TorchScript-based export: dynamic height and width through interpolate's size
                torch.onnx.export(net, (example,), str(raw_path), input_names=[input_name], output_names=[output_name],
                                  opset_version=opset, dynamo=False,
                                  dynamic_axes={input_name: {0: "batch", 2: "height", 3: "width"},
                                                output_name: {0: "batch", 2: "out_height", 3: "out_width"}})
            except Exception as exc:
                raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
        proto = onnx.load(str(raw_path))
        import onnxruntime as ort

        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        st_in = transform(load_like_training(st_rgb, "RGB")).unsqueeze(0).numpy().astype(np.float32)
        st_onnx = sess.run([output_name], {input_name: st_in})[0]
        st_ref = st_out.numpy()
        diff = float(np.max(np.abs(st_onnx - st_ref)))
        spec = dataclasses.replace(spec, self_test=SelfTest(
            base64.b64encode(png.tobytes()).decode("ascii"), tuple(float(v) for v in st_ref[0].mean(axis=(1, 2))),
            float(max(1e-3, 20 * diff)))).validate()
        staged = Path(tmp) / "model.onnx"
        write_with_spec(proto, staged, spec)
        deployed = edgeinfer.load(staged)
        worst, agreement = 0.0, []
        for name, img in named:
            rgb = np.asarray(img.convert("RGB"))
            with torch.no_grad():
                logits = net(transform(img).unsqueeze(0).float())
                ref_map = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False).argmax(1)[0]
            x = deployed.preprocess(rgb, color="rgb")[None]
            got = deployed.run(x)
            worst = max(worst, float(np.max(np.abs(got - logits.numpy()))))
            seg = deployed.predict(rgb, color="rgb")
            agreement.append(float(np.mean(seg.class_map == ref_map.numpy())))
        if worst > atol or min(agreement) < min_agreement:
            raise ExportError(f"export_segmenter: the deployed model differs from torch: logits by {worst:.3g} "
                              f"(allowed {atol}), class maps agree on {min(agreement):.4%} of pixels at worst "
                              f"(required {min_agreement:.2%}). Nothing was written.")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_with_spec(proto, out, spec)
    return SegmenterExportReport(str(out), spec, len(named), worst, tuple(agreement))


@dataclass(frozen=True)
class EmbedderExportReport:
    """What :func:`export_embedder` wrote and measured: per verification image, the cosine similarity of the
    deployed model's vector (edgeinfer's preprocessing, ONNX Runtime) with torch's (the user's transform)."""

    path: str
    spec: Spec
    cosine: tuple[float, ...]
    max_abs_diff: float  # raw vectors, torch vs the deployed model

    @property
    def min_cosine(self) -> float:
        return min(self.cosine) if self.cosine else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "images": len(self.cosine), "cosine": list(self.cosine),
                "min_cosine": self.min_cosine, "max_abs_diff": self.max_abs_diff, "spec": self.spec.to_dict()}


def export_embedder(model: Any, path: str | os.PathLike, *, transform: Any, normalize: bool = True,
                    images: Iterable[Any] | None = None, input_name: str = "input", output_name: str = "embedding",
                    opset: int = OPSET, min_cosine: float = 0.9999) -> EmbedderExportReport:
    """Export an image embedder -- a model whose output is a feature vector (N, D): a classifier with its head
    replaced by ``torch.nn.Identity()``, a timm model with ``num_classes=0``, a CLIP-style image tower -- with
    the spec of ``transform`` to ``path``. ``normalize``: the runtime L2-normalises the vectors (as retrieval
    code does before cosine search). Verified on ``images`` (paths, PIL images or RGB arrays; probe images when
    None): each deployed vector's cosine with torch's must reach ``min_cosine``, or nothing is written. The
    self-test vector is the raw vector of the self-test image."""
    import onnx
    import onnxruntime as ort
    import torch

    import edgeinfer
    from edgeinfer.tasks.embedding import cosine, vectors

    model.eval()
    spec = spec_from_transform(transform, input_name=input_name, output_name=output_name,
                               output_kind="embedding_l2" if normalize else "embedding", task="embedding")
    named = _pil_images(list(images) if images is not None else None, "rgb")
    st_rgb = selftest_image()
    st_in = transform(load_like_training(st_rgb, "RGB")).unsqueeze(0).float()
    with torch.no_grad():
        st_ref = model(st_in).numpy()
    vectors(st_ref, l2=False)  # the output must be (N, D): refuse a classifier's logits map early
    png = _selftest_png(st_rgb)
    out = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(model, (torch.cat([st_in, st_in]),), str(raw_path), input_names=[input_name],
                                  output_names=[output_name], opset_version=opset, dynamo=False,
                                  dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
            except Exception as exc:
                raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
        proto = onnx.load(str(raw_path))
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        diff = float(np.max(np.abs(sess.run([output_name], {input_name: st_in.numpy()})[0] - st_ref)))
        spec = dataclasses.replace(spec, self_test=SelfTest(
            base64.b64encode(png.tobytes()).decode("ascii"), tuple(float(v) for v in vectors(st_ref, l2=False)[0]),
            float(max(1e-3, 20 * diff)))).validate()
        staged = Path(tmp) / "model.onnx"
        write_with_spec(proto, staged, spec)
        deployed = edgeinfer.load(staged)
        cosines, worst = [], 0.0
        for _, img in named:
            with torch.no_grad():
                ref = vectors(model(transform(img).unsqueeze(0).float()).numpy(), l2=False)[0]
            raw = vectors(deployed.run(deployed.preprocess(np.asarray(img.convert("RGB")), color="rgb")[None]),
                          l2=False)[0]
            worst = max(worst, float(np.max(np.abs(raw - ref))))
            cosines.append(float(cosine(raw, ref)[0, 0]))
        if min(cosines) < min_cosine:
            raise ExportError(f"export_embedder: the deployed vectors reach cosine {min(cosines):.6f} with torch's "
                              f"at worst (required {min_cosine}). Nothing was written.")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_with_spec(proto, out, spec)
    return EmbedderExportReport(str(out), spec, tuple(cosines), worst)
