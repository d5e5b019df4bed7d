"""Exporting a PyTorch model to one self-describing ONNX file, then checking it against torch.

One skeleton serves every task (:func:`export`): eval mode, the opset, one ``torch.onnx.export`` policy, the
spec and its self-test, verification by the task's gate (:mod:`edgeinfer.tasks.gates`) and an atomic write.
What differs per task is a small :class:`_Piece` in :data:`PIECES`: its default names, the input axes that stay
dynamic, how the spec and the verification samples are made, and its report.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from converters.attach import spec_for, write_with_spec
from converters.compare import ParityReport, collect, load_like_training
from converters.transforms import probe_images, spec_from_transform
from edgeinfer.errors import ExportError
from edgeinfer.spec import OUTPUT_KINDS, OutputSpec, SelfTest, Spec
from edgeinfer import tasks
from edgeinfer.tasks import classification
from edgeinfer.tasks.gates import Verdict

OPSET = 18


class ExportWarning(UserWarning):
    """Something about the model was changed or doubtful at export time."""


# -- what an export gives back ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportReport:
    """What export produced and how closely the ONNX model matches torch.

    ``export_*`` compare torch with ONNX Runtime on the same tensors (the user's transform);
    ``deploy_*`` compare torch fed by the user's transform with the edgeinfer runtime fed the raw image.
    ``verification`` holds the figures of the gate the deployment passed.
    """

    path: str
    spec: Spec
    parity: ParityReport
    switched_to_eval: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)
    verification: dict[str, Any] = field(default_factory=dict)

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
                "verification": self.verification, "parity": self.parity.to_dict(), "spec": self.spec.to_dict()}


@dataclass(frozen=True)
class DetectorExportReport:
    """What a detector export wrote and measured: torch vs ONNX Runtime on the device's own inputs."""

    path: str
    spec: Spec
    images: int
    max_abs_diff: float  # raw outputs, torch vs ONNX Runtime, on the preprocessed images
    detections: list[int]  # detections per verification image, on the device side
    switched_to_eval: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)
    verification: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "spec": self.spec.to_dict(), "images": self.images,
                "max_abs_diff": self.max_abs_diff, "detections": list(self.detections),
                "switched_to_eval": self.switched_to_eval, "warnings": list(self.warnings),
                "verification": self.verification}


@dataclass(frozen=True)
class SegmenterExportReport:
    """What a semantic segmenter export wrote and measured on the verification images: the logits at the model's
    resolution (torch vs ONNX Runtime through the edgeinfer preprocessing) and the class maps in the
    original frame (torch + the transform + bilinear upsampling + argmax vs :class:`edgeinfer.Segmentation`)."""

    path: str
    spec: Spec
    images: int
    logits_max_abs_diff: float
    pixel_agreement: tuple[float, ...]  # per image, the fraction of frame pixels with the same class
    switched_to_eval: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)
    verification: dict[str, Any] = field(default_factory=dict)

    @property
    def min_pixel_agreement(self) -> float:
        return min(self.pixel_agreement) if self.pixel_agreement else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "images": self.images, "logits_max_abs_diff": self.logits_max_abs_diff,
                "pixel_agreement": list(self.pixel_agreement), "min_pixel_agreement": self.min_pixel_agreement,
                "switched_to_eval": self.switched_to_eval, "warnings": list(self.warnings),
                "verification": self.verification, "spec": self.spec.to_dict()}


@dataclass(frozen=True)
class EmbedderExportReport:
    """What an embedder export wrote and measured: per verification image, the cosine similarity of the
    deployed model's vector (edgeinfer's preprocessing, ONNX Runtime) with torch's (the user's transform)."""

    path: str
    spec: Spec
    cosine: tuple[float, ...]
    max_abs_diff: float  # raw vectors, torch vs the deployed model
    switched_to_eval: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)
    verification: dict[str, Any] = field(default_factory=dict)

    @property
    def min_cosine(self) -> float:
        return min(self.cosine) if self.cosine else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "images": len(self.cosine), "cosine": list(self.cosine),
                "min_cosine": self.min_cosine, "max_abs_diff": self.max_abs_diff,
                "switched_to_eval": self.switched_to_eval, "warnings": list(self.warnings),
                "verification": self.verification, "spec": self.spec.to_dict()}


# -- images ----------------------------------------------------------------------------------------------
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
                                      "Pass output=... to export.")
                return y[key]
            return y.logits if hasattr(y, "logits") else y

    return Select().eval()


def _numpy_outputs(y: Any) -> list[np.ndarray]:
    """A model's output (a tensor, or a tuple/list of them) as a list of arrays."""
    return [t.detach().cpu().numpy() for t in (y if isinstance(y, (tuple, list)) else (y,))]


# -- one export, step by step ------------------------------------------------------------------------------
@dataclass
class _Job:
    """What one export works on; the skeleton and the task's piece fill it in turn."""

    task: str
    model: Any  # the user's module, in eval mode
    net: Any  # the module exported: the model, or its logits picked out of a dict output
    transform: Any
    source: Any
    labels: tuple[str, ...] | None
    images: list[Any] | None
    loader_color: str
    input_name: str
    output_names: tuple[str, ...]
    output_kind: str
    example_hw: tuple[int, int]
    tta: Any
    tolerances: dict[str, float]  # keyword arguments for the task's gate
    notes: list[str]
    task_given: bool = True  # False: a detector's task comes from its source
    spec: Spec | None = None  # before the graph exists (None: the piece makes it from the graph)
    probe: Any = None  # (N, C, H, W) torch batch of real inputs: the behaviour checks and the tracing example
    named: list[tuple[str, Any]] = field(default_factory=list)  # verification images as the piece needs them


@dataclass(frozen=True)
class _Piece:
    """What one task adds to the skeleton."""

    input_name: str
    output_names: tuple[str, ...]
    dynamic: dict[int, str]  # input axes that stay dynamic in the graph
    select_output: bool  # export ``model(x)[output]`` (dict or Hugging Face outputs) instead of ``model(x)``
    prepare: Callable[[_Job], None]  # fills job.spec (or leaves it to ``spec``), job.probe and job.named
    spec: Callable[[_Job, Any, Path], Spec]  # (job, graph proto, graph file) -> the complete spec
    verify: Callable[[_Job, Any, Path], tuple[Verdict, Any]]  # (job, deployed model, staged file) -> verdict, extra
    report: Callable[[_Job, str, Spec, Verdict, Any, bool], Any]  # (job, path, spec, verdict, extra, switched)
    refusal: Callable[[dict[str, Any]], str]  # the gate's figures, said for a person


def _eval_mode(model: Any, strict: bool, notes: list[str]) -> bool:
    """Put ``model`` in eval mode, warning (or refusing when ``strict``) when it was training; whether it was."""
    switched = bool(model.training)
    if switched:
        msg = ("the model was in train mode (BatchNorm would use batch statistics, Dropout would be active); "
               "exporting it in eval mode. Call model.eval() before export to silence this.")
        if strict:
            raise ExportError(msg.replace("exporting it in eval mode", "refusing with strict=True"))
        warnings.warn(msg, ExportWarning, stacklevel=3)
        notes.append(msg)
    model.eval()
    return switched


def _behaviour_checks(job: _Job, strict: bool) -> None:
    """Warn (or refuse when ``strict``) when eval-mode outputs are random or depend on the rest of the batch."""
    import torch

    batch = job.probe
    with torch.no_grad():
        first = _numpy_outputs(job.net(batch))
        again = _numpy_outputs(job.net(batch))
        singles = [_numpy_outputs(job.net(batch[i:i + 1])) for i in range(batch.shape[0])]
    singles = [np.concatenate(parts) for parts in zip(*singles)]

    def worst(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
        """The largest difference, and the largest relative to each output's magnitude."""
        pairs = [(x.astype(np.float64), y) for x, y in zip(a, b) if x.size]
        diffs = [(float(np.max(np.abs(x - y))), max(1.0, float(np.max(np.abs(y))))) for x, y in pairs]
        return max((d for d, _ in diffs), default=0.0), max((d / m for d, m in diffs), default=0.0)

    for problem, (diff, relative) in (
            ("outputs change between two identical calls (a random op is active)", worst(again, first)),
            ("an image's output depends on the other images in its batch (BatchNorm using batch statistics?)",
             worst(singles, first))):
        # relative to the output's magnitude: batched and single-image kernels round differently, and on
        # logits in the thousands that alone exceeds any absolute threshold
        if relative > 1e-4:
            msg = f"in eval mode, {problem}: max difference {diff:.2e}. The exported model will behave so too."
            if strict:
                raise ExportError(msg + " Refusing with strict=True.")
            warnings.warn(msg, ExportWarning, stacklevel=3)
            job.notes.append(msg)
    trainable = sum(p.numel() for p in job.model.parameters() if p.requires_grad)
    if trainable:
        job.notes.append(f"{trainable} parameters had requires_grad=True; they were exported as constants under "
                         "torch.no_grad (no autograd state is in the graph).")


def _to_onnx(job: _Job, piece: _Piece, raw_path: Path, opset: int) -> Any:
    """The graph of ``job.net``, exported by the one policy every task shares."""
    import onnx
    import torch

    example = job.probe[:2] if job.probe.shape[0] >= 2 else torch.cat([job.probe, job.probe])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            # dynamo=True for every task: torch.export refuses data-dependent Python control flow instead of
            # silently baking in the branch the tracing example took (what the TorchScript tracer does), and
            # it keeps the symbolic sizes the tasks need -- batch everywhere, height and width of LR-ASPP
            # (through its interpolate to the input size) and of a YOLO-based detector -- as measured here.
            # The TorchScript exporter (dynamo=False) is deprecated since torch 2.9.
            # The example is a batch of two real inputs so that the batch axis is not specialised to 1.
            torch.onnx.export(job.net, (example,), str(raw_path), dynamo=True, opset_version=opset,
                              input_names=[job.input_name], output_names=list(job.output_names),
                              dynamic_axes={job.input_name: dict(piece.dynamic)}, external_data=False,
                              verbose=False)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for {type(job.model).__name__}: {exc}") from exc
    return onnx.load(str(raw_path))


def _selftested(job: _Job, proto: Any, raw_path: Path) -> Spec:
    """``job.spec`` with the self-test vector: the task's reading of torch's output for :func:`selftest_image`
    through the user's transform; its tolerance from how far ONNX Runtime is from torch on that input."""
    import onnxruntime as ort
    import torch


    st_rgb = selftest_image()
    with torch.no_grad():
        st_in = job.transform(load_like_training(st_rgb, "RGB" if job.loader_color == "rgb" else "L"))
        st_in = st_in.unsqueeze(0).float()
        st_ref = job.net(st_in).detach().cpu().numpy()
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    st_onnx = sess.run([job.output_names[0]], {job.input_name: st_in.numpy()})[0]
    atol = float(max(1e-3, 20 * np.max(np.abs(st_onnx - st_ref))))
    vector = np.asarray(tasks.get(job.task).selftest(st_ref), dtype=np.float64).reshape(-1)
    png = _selftest_png(st_rgb)
    return dataclasses.replace(job.spec, self_test=SelfTest(base64.b64encode(png.tobytes()).decode("ascii"),
                                                            tuple(float(v) for v in vector), atol)).validate()


def _transform_batch(job: _Job) -> Any:
    import torch

    with torch.no_grad():
        return torch.stack([job.transform(im) for _, im in job.named]).float()


# -- classification ----------------------------------------------------------------------------------------
def _classifier_prepare(job: _Job) -> None:
    import torch

    if job.output_kind not in ("auto",) + OUTPUT_KINDS:
        raise ExportError(f"output_kind: expected 'auto' or one of {OUTPUT_KINDS}, found {job.output_kind!r}.")
    job.named = _pil_images(job.images, job.loader_color)
    job.spec = spec_from_transform(job.transform, input_name=job.input_name, output_name=job.output_names[0],
                                   output_kind="logits", labels=job.labels, loader_color=job.loader_color)
    job.probe = _transform_batch(job)
    with torch.no_grad():
        ref_raw = job.net(job.probe).detach().cpu().numpy()
    kind = job.output_kind
    if kind == "auto":
        kind = "probabilities" if classification.looks_like_probabilities(ref_raw) else "logits"
        if kind == "probabilities":
            job.notes.append("the model output is already a probability distribution; the runtime will not apply "
                             "softmax again.")
    if job.labels is not None and ref_raw.shape[1] != len(job.labels):
        raise ExportError(f"labels: expected one per class ({ref_raw.shape[1]}), found {len(job.labels)}.")
    job.spec = dataclasses.replace(job.spec, output=OutputSpec(job.output_names[0], kind), tta=job.tta)


def _classifier_verify(job: _Job, deployed: Any, staged: Path) -> tuple[Verdict, Any]:
    images = job.images if job.images is not None else [im for _, im in job.named]
    # one image per torch call, as the device runs predict(): a model whose output depends on its batch (warned
    # about above) is judged on what each image gives alone
    outputs = collect(job.model, job.transform, staged, images, batch=1)
    kind = outputs.kind
    probs = {key: classification.to_probabilities(classification.class_scores(raw), kind)
             for key, raw in (("reference", outputs.reference), ("deployment", outputs.candidates["deployment"]))}
    verdict = tasks.get("classification").gate([{"probabilities": p} for p in probs["reference"]],
                                      [{"probabilities": p} for p in probs["deployment"]], **job.tolerances)
    return verdict, outputs


def _classifier_report(job: _Job, path: str, spec: Spec, verdict: Verdict, outputs: Any, switched: bool) -> Any:
    return ExportReport(path=path, spec=spec, parity=outputs.parity(path), switched_to_eval=switched,
                        warnings=tuple(job.notes), verification=verdict.figures)


# -- semantic segmentation ---------------------------------------------------------------------------------
def _semantic_prepare(job: _Job) -> None:
    import torch

    kind = "logits" if job.output_kind == "auto" else job.output_kind
    job.spec = spec_from_transform(job.transform, input_name=job.input_name, output_name=job.output_names[0],
                                   output_kind=kind, labels=job.labels, loader_color=job.loader_color,
                                   dynamic_size=True, task="semantic_segmentation")
    job.named = _pil_images(job.images, job.loader_color)
    with torch.no_grad():
        x = job.transform(job.named[0][1]).unsqueeze(0).float()
        out = job.net(x)
    if out.ndim != 4:
        raise ExportError(f"the model's output has shape {tuple(out.shape)}; a semantic segmenter gives class "
                          "logits (B, C, h, w).")
    if job.labels is not None and out.shape[1] != len(job.labels):
        raise ExportError(f"labels: expected one per class ({out.shape[1]}), found {len(job.labels)}.")
    job.probe = torch.cat([x, x.flip(-1)])  # the input size follows the image: two inputs of one size


def _semantic_verify(job: _Job, deployed: Any, staged: Path) -> tuple[Verdict, Any]:
    import torch
    import torch.nn.functional as F

    ref, got = [], []
    for _, img in job.named:
        rgb = np.asarray(img.convert("RGB"))
        with torch.no_grad():
            logits = job.net(job.transform(img).unsqueeze(0).float())
            ref_map = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False).argmax(1)[0]
        ref.append({"logits": logits[0].numpy(), "class_map": ref_map.numpy()})
        got.append({"logits": deployed.run(deployed.preprocess(rgb, color="rgb")[None])[0],
                    "class_map": deployed.predict(rgb, color="rgb").class_map})
    return tasks.get("semantic_segmentation").gate(ref, got, **job.tolerances), None


def _semantic_report(job: _Job, path: str, spec: Spec, verdict: Verdict, _: Any, switched: bool) -> Any:
    f = verdict.figures
    return SegmenterExportReport(path, spec, f["images"], f["logits_max_abs_diff"], tuple(f["pixel_agreement"]),
                                 switched, tuple(job.notes), f)


# -- embeddings --------------------------------------------------------------------------------------------
def _embedder_prepare(job: _Job) -> None:
    import torch

    from edgeinfer.tasks.embedding import vectors

    kind = "embedding_l2" if job.output_kind == "auto" else job.output_kind
    if kind not in ("embedding", "embedding_l2"):
        raise ExportError(f"output_kind: an embedder's is 'embedding' or 'embedding_l2', found {kind!r}.")
    job.spec = spec_from_transform(job.transform, input_name=job.input_name, output_name=job.output_names[0],
                                   output_kind=kind, loader_color=job.loader_color, task="embedding")
    job.named = _pil_images(job.images, job.loader_color)
    job.probe = _transform_batch(job)
    with torch.no_grad():
        vectors(job.net(job.probe[:1]).numpy(), l2=False)  # the output must be (N, D): refuse a logits map early


def _embedder_verify(job: _Job, deployed: Any, staged: Path) -> tuple[Verdict, Any]:
    import torch

    from edgeinfer.tasks.embedding import vectors

    ref, got = [], []
    for _, img in job.named:
        with torch.no_grad():
            ref.append({"vector": vectors(job.net(job.transform(img).unsqueeze(0).float()).numpy(), l2=False)[0]})
        raw = deployed.run(deployed.preprocess(np.asarray(img.convert("RGB")), color="rgb")[None])
        got.append({"vector": vectors(raw, l2=False)[0]})
    return tasks.get("embedding").gate(ref, got, **job.tolerances), None


def _embedder_report(job: _Job, path: str, spec: Spec, verdict: Verdict, _: Any, switched: bool) -> Any:
    f = verdict.figures
    return EmbedderExportReport(path, spec, tuple(f["cosine"]), f["max_abs_diff"], switched, tuple(job.notes), f)


# -- detectors (detection, pose, oriented boxes, instance masks) -------------------------------------------
def _frame(item: Any) -> np.ndarray:
    """A BGR frame from a file or an array (arrays are taken as BGR, as the runtime takes them)."""
    if isinstance(item, (str, os.PathLike)):
        import cv2

        frame = cv2.imread(str(item), cv2.IMREAD_COLOR)
        if frame is None:
            raise ExportError(f"{item}: expected an image file OpenCV can read.")
        return frame
    return np.asarray(item)


def _detector_prepare(job: _Job) -> None:
    import cv2
    import torch

    if job.source is None:
        raise ExportError(f"a {job.task} export reads its pre- and postprocessing from source=... (e.g. {{'size': 640, "
                          "'letterbox': True, 'task': 'detection', 'postprocess': {'decoder': 'dets_labels'}}); "
                          "found none.")
    frames = job.images if job.images is not None else [np.asarray(im)[..., ::-1].copy() for im in probe_images()]
    if not frames:
        raise ExportError("export: expected at least one verification image, found none.")
    job.named = [(str(f) if isinstance(f, (str, os.PathLike)) else f"image{i}", f) for i, f in enumerate(frames)]
    # Real pixels at the example size, to trace and to check the model's behaviour on (not the device's exact
    # preprocessing, which comes from ``source`` once there is a graph to check it against).
    h, w = job.example_hw
    rgb = [cv2.resize(_frame(f)[..., ::-1], (w, h), interpolation=cv2.INTER_AREA) for _, f in job.named[:4]]
    job.probe = torch.from_numpy(np.stack(rgb).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def _detector_spec(job: _Job, proto: Any, raw_path: Path) -> Spec:
    spec = spec_for(raw_path, job.source, labels=list(job.labels) if job.labels is not None else None)
    if job.task_given and spec.task != job.task:
        raise ExportError(f"task: expected {job.task!r}, found {spec.task!r} in the source; give the task in the "
                          "source ('task': ...) or pass the same task.")
    job.task = spec.task
    return spec


def _detector_verify(job: _Job, deployed: Any, staged: Path) -> tuple[Verdict, Any]:
    import torch


    read = deployed.task.outputs(deployed.spec)
    ref, got = [], []
    for _, item in job.named:
        prepared = deployed.prepare([_frame(item)])
        with torch.no_grad():
            mine = dict(zip(job.output_names, _numpy_outputs(job.net(torch.from_numpy(prepared.batch)))))
        theirs = deployed.infer(prepared)
        for side, outs in ((ref, [mine[n] for n in read]), (got, theirs)):
            det = deployed.finish(prepared, outs)[0]
            side.append({"outputs": outs, "xyxy": det.xyxy, "class_id": det.class_id})
    return deployed.task.gate(ref, got, **job.tolerances), None


def _detector_report(job: _Job, path: str, spec: Spec, verdict: Verdict, _: Any, switched: bool) -> Any:
    f = verdict.figures
    return DetectorExportReport(path, spec, f["images"], f["outputs_max_abs_diff"], list(f["candidate_detections"]),
                                switched, tuple(job.notes), f)


_DETECTOR = _Piece(
    "images", ("output0",), {0: "batch", 2: "height", 3: "width"}, False, _detector_prepare, _detector_spec,
    _detector_verify, _detector_report,
    lambda f: (f"raw outputs differ by {f['outputs_relative_diff']:.3g} of their magnitude (allowed {f['atol']}), "
               f"boxes by {f['box_max_abs_diff']:.3g} px (allowed {f['box_atol']}), detections per image "
               f"{f['candidate_detections']} vs torch's {f['detections']}"))

#: The per-task pieces of :func:`export`, keyed by the runtime's task names.
PIECES: dict[str, _Piece] = {
    "classification": _Piece(
        "input", ("logits",), {0: "batch"}, False, _classifier_prepare, _selftested, _classifier_verify,
        _classifier_report,
        lambda f: (f"probabilities differ by {f['max_abs_diff']:.3g} (allowed {f['atol']}), top-1 differs on "
                   f"{f['top1_disagreements']} of {f['images']} images")),
    "semantic_segmentation": _Piece(
        "input", ("logits",), {0: "batch", 2: "height", 3: "width"}, True, _semantic_prepare, _selftested,
        _semantic_verify, _semantic_report,
        lambda f: (f"logits by {f['logits_max_abs_diff']:.3g} with magnitudes up to {f['logits_max_abs']:.3g} "
                   f"(relative {f['logits_relative_diff']:.3g}, allowed {f['atol']} of max(1, |logit|)), class maps "
                   f"agree on {f['min_pixel_agreement']:.4%} of pixels at worst (required {f['min_agreement']:.2%})")),
    "embedding": _Piece(
        "input", ("embedding",), {0: "batch"}, False, _embedder_prepare, _selftested, _embedder_verify,
        _embedder_report,
        lambda f: f"the vectors reach cosine {f['min_cosine']:.6f} with torch's at worst (required {f['required']})"),
    **{t.name: _DETECTOR for t in tasks.TABLE.values() if t.detector},
}


def _task_of(task: str | None, transform: Any, source: Any, output_kind: str) -> str:
    """The task given, or the one the arguments imply: a source describes a detector, torchvision's
    SemanticSegmentation preset a semantic segmenter, an embedding output kind an embedder."""
    if task is not None:
        if task not in PIECES:
            raise ExportError(f"task: expected one of {sorted(PIECES)}, found {task!r}.")
        return task
    if source is not None:
        return "detection"  # the source's own task decides among the detector tasks
    if type(transform).__name__ == "SemanticSegmentation":
        return "semantic_segmentation"
    implied = [t.name for t in tasks.TABLE.values() if output_kind in t.output_kinds and not t.detector]
    if len(implied) == 1:  # the kind says it (an embedding kind); logits may be a classifier's or a segmenter's
        return implied[0]
    return "classification"


def export(model: Any, path: str | os.PathLike, *, transform: Any = None, task: str | None = None,
           source: Any = None, labels: Sequence[str] | None = None, images: Iterable[Any] | None = None,
           output_kind: str = "auto", loader_color: str = "rgb", input_name: str | None = None,
           output_name: str | Sequence[str] | None = None, output: str | None = "out",
           example_hw: tuple[int, int] = (640, 640), opset: int = OPSET, strict: bool = False, tta: Any = None,
           tolerances: dict[str, float] | None = None) -> Any:
    """Export ``model`` to ``path`` with its preprocessing, verify it against torch, and return the task's report.

    ``task`` is one of the runtime's tasks; when None it follows from the arguments: ``source`` (a detector's
    description, see below) gives a detector, torchvision's ``SemanticSegmentation`` preset a semantic segmenter,
    ``output_kind="embedding"``/``"embedding_l2"`` an embedder, anything else a classifier.

    Every task goes through the same steps. The model is put in eval mode (with an :class:`ExportWarning`, or
    :class:`ExportError` when ``strict``); eval-mode outputs that change between calls or with the rest of the
    batch are reported the same way. It is exported at ``opset`` >= 17 with the task's dynamic axes (batch;
    also height and width for segmenters and detectors), the spec and its self-test vector are written into
    the ONNX metadata, and the deployed model (edgeinfer's preprocessing, ONNX Runtime) is checked on
    ``images`` against torch by the task's gate (the task table's ``gate``, :mod:`edgeinfer.tasks.gates`; ``tolerances`` override
    its keyword arguments, e.g. ``{"min_agreement": 0.995}``). Nothing is written unless the gate passes;
    the file is written to a temporary name beside ``path`` and renamed into place.

    Per task:

    - classifier (:class:`ExportReport`): ``transform`` is the eval transform, ``images`` paths, PIL images or
      RGB arrays (built-in probe images when None); ``output_kind`` "auto" detects probability outputs; ``tta``
      (an :class:`edgeinfer.spec.TTA`) records the test-time augmentation ``predict`` applies by default.
    - semantic segmenter (:class:`SegmenterExportReport`): the input's height and width stay dynamic;
      ``output`` picks the logits from a dict output (torchvision: ``"out"``). The class map reference is torch's
      transform, model, ``F.interpolate(bilinear, align_corners=False)`` to the image's size, argmax.
    - embedder (:class:`EmbedderExportReport`): an (N, D) output; ``output_kind`` "embedding_l2" (the default)
      has the runtime L2-normalise the vectors.
    - detector (:class:`DetectorExportReport`): ``source`` is what :func:`edgeinfer.importers.resolve` reads
      (e.g. ``{"size": 640, "letterbox": True, "task": "detection", "postprocess": {"decoder":
      "dets_labels"}}``); ``output_name`` lists the outputs in the order the decoder reads them; ``images``
      are BGR frames or files; ``example_hw`` is the size of the tracing example.
    """
    given, task = task, _task_of(task, transform, source, output_kind)
    piece = PIECES[task]
    if opset < 17:
        raise ExportError(f"opset: expected 17 or newer, found {opset}. Older opsets lack ops the exporter needs.")
    if not tasks.get(task).detector and transform is None:
        raise ExportError(f"a {task} export needs transform=... (the eval transform the model was trained with).")
    if tta is not None and tasks.get(task).tta is None:
        raise ExportError(f"tta: test-time augmentation is recorded for classifiers; this is a {task} export.")
    names = (output_name,) if isinstance(output_name, str) else tuple(output_name or piece.output_names)
    notes: list[str] = []
    switched = _eval_mode(model, strict, notes)
    job = _Job(task=task, model=model, net=_select_output(model, output) if piece.select_output else model,
               transform=transform, source=source, labels=tuple(labels) if labels is not None else None,
               images=list(images) if images is not None else None, loader_color=loader_color,
               input_name=input_name or piece.input_name, output_names=names, output_kind=output_kind,
               example_hw=tuple(example_hw), tta=tta, tolerances=dict(tolerances or {}), notes=notes,
               task_given=given is not None)
    piece.prepare(job)
    _behaviour_checks(job, strict)

    out = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        proto = _to_onnx(job, piece, raw_path, opset)
        spec = piece.spec(job, proto, raw_path)
        staged = Path(tmp) / "model.onnx"
        write_with_spec(proto, staged, spec)
        import edgeinfer

        verdict, extra = piece.verify(job, edgeinfer.load(staged), staged)
        if not verdict.passed:
            raise ExportError(f"export: the deployed {job.task} model differs from torch: "
                              f"{piece.refusal(verdict.figures)}. Nothing was written. Check the model for "
                              "export-unsafe operations and the transform for steps the spec cannot reproduce.")
        write_with_spec(proto, out, spec)
    return piece.report(job, str(out), spec, verdict, extra, switched)


# -- the task-named entry points: export(..., task=...) with their historical arguments ---------------------
def export_detector(model: Any, path: str | os.PathLike, *, source: Any, labels: Sequence[str] | None = None,
                    images: Iterable[Any] | None = None, output_names: Sequence[str] = ("output0",),
                    input_name: str = "images", example_hw: tuple[int, int] = (640, 640), opset: int = OPSET,
                    atol: float = 1e-3) -> DetectorExportReport:
    """:func:`export` of a user's own torch detector with the pre- and postprocessing ``source`` describes.

    ``atol`` bounds the raw outputs relative to their magnitude (``atol * max(1, |value|)``); boxes must agree
    within 0.5 px with equal counts per image (:func:`edgeinfer.tasks.gates.detection`).
    """
    # no task: the source says which detector task (detection, pose, obb, segment)
    return export(model, path, source=source, labels=labels, images=images,
                  output_name=tuple(output_names), input_name=input_name, example_hw=example_hw, opset=opset,
                  tolerances={"atol": atol})


def export_segmenter(model: Any, path: str | os.PathLike, *, transform: Any, labels: Sequence[str] | None = None,
                     images: Iterable[Any] | None = None, output: str | None = "out", input_name: str = "input",
                     output_name: str = "logits", opset: int = OPSET, min_agreement: float = 0.999,
                     atol: float = 1e-3) -> SegmenterExportReport:
    """:func:`export` of a semantic segmenter with its evaluation ``transform`` (e.g. torchvision's
    ``SemanticSegmentation`` preset). ``atol`` bounds the logits relative to their magnitude
    (``atol * max(1, max|logit|)``); the class maps must agree on ``min_agreement`` of the pixels."""
    return export(model, path, task="semantic_segmentation", transform=transform, labels=labels, images=images,
                  output=output, input_name=input_name, output_name=output_name, opset=opset,
                  tolerances={"atol": atol, "min_agreement": min_agreement})


def export_embedder(model: Any, path: str | os.PathLike, *, transform: Any, normalize: bool = True,
                    images: Iterable[Any] | None = None, input_name: str = "input", output_name: str = "embedding",
                    opset: int = OPSET, min_cosine: float = 0.9999) -> EmbedderExportReport:
    """:func:`export` of an image embedder (an (N, D) output: a classifier with its head replaced by
    ``torch.nn.Identity()``, a timm model with ``num_classes=0``, a CLIP-style image tower). ``normalize``: the
    runtime L2-normalises the vectors. Each deployed vector's cosine with torch's must reach ``min_cosine``."""
    return export(model, path, task="embedding", transform=transform, images=images, input_name=input_name,
                  output_name=output_name, output_kind="embedding_l2" if normalize else "embedding", opset=opset,
                  tolerances={"min_cosine": min_cosine})
