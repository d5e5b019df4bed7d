"""Loading an exported model with its spec, and predicting with it."""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from edgeinfer import engines, providers, tasks
from edgeinfer.engines import base as engine_base, choice
from edgeinfer.engines.base import Session, variant_path
from edgeinfer.pipeline import contract
from edgeinfer import importers
from edgeinfer.errors import ImageError, ModelError, SpecError, SpecMissingError
from edgeinfer.tasks.detections import Detections
from edgeinfer.pipeline.images import ImageInput, decode, to_model_layout
from edgeinfer.pipeline.preprocess import Prepared, Preprocessor
from edgeinfer.spec import METADATA_KEY, TTA_MERGES, TTA_MODES, Spec, Step
from edgeinfer.tasks.classification import Prediction
from edgeinfer.tasks.embedding import Embedding
from edgeinfer.tasks.segmentation import Segmentation

# what predict gives, by task: the task table's result types
Result = Prediction | Detections | Segmentation | Embedding

def read_spec(session: Session, path: str | os.PathLike = "model") -> Spec:
    """Return the validated spec stored in a session's model metadata (the .onnx file's, whatever the engine).

    A model without one but with Ultralytics' own metadata gets the spec its predictor implies.
    """
    meta = session.metadata
    if METADATA_KEY in meta:
        return Spec.from_json(meta[METADATA_KEY])
    if importers.is_ultralytics(meta):
        # Ultralytics' predictor calls an ONNX file dynamic when its first output's batch axis is symbolic.
        dynamic = not isinstance(session.get_outputs()[0].shape[0], int)
        return importers.resolve(importers.from_ultralytics(meta, dynamic=dynamic), session, path=path)
    raise SpecMissingError(f"{path}: expected an edgeinfer spec in the model metadata under {METADATA_KEY!r}, "
                           f"found keys {sorted(meta)}. {importers.WAYS}")


@dataclass(frozen=True)
class SelfTestResult:
    """Whether the spec's embedded self-test reproduces on this device, with the measured difference."""

    passed: bool
    max_abs_diff: float
    atol: float
    providers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "max_abs_diff": self.max_abs_diff, "atol": self.atol,
                "providers": list(self.providers)}


class Model:
    """An ONNX model together with its preprocessing; ``predict`` takes raw frames.

    ``session`` is the engine's loaded graph (:mod:`edgeinfer.engines`: ONNX Runtime by default, OpenVINO, ...);
    everything before and after the graph is edgeinfer's, the same for every engine. One session is shared; its
    ``run`` is safe to call from several threads.
    """

    def __init__(self, session: Session, spec: Spec, *, path: str = "model",
                 device: str = "cpu", requested: Sequence[str] = (), preprocess: str = "exact") -> None:
        self.session = session
        self.spec = spec
        self.path = path
        self.device = device
        self.requested_providers = tuple(requested)
        self.preprocessor = Preprocessor(spec, mode=preprocess)
        self._check_io()
        dim = session.get_inputs()[0].shape[0]
        self._fixed_batch = dim if isinstance(dim, int) else None
        self._tta_cache: dict[str, list[Preprocessor]] = {}
        self._square: Preprocessor | None = None  # mixed-size batches of a dynamic detector

    # -- facts ------------------------------------------------------------------------------------
    @property
    def task(self) -> tasks.Task:
        """The task table's entry for this model's task."""
        return tasks.get(self.spec.task)

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.spec.labels

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the session actually uses, in priority order (``openvino:CPU`` for OpenVINO)."""
        return tuple(self.session.get_providers())

    @property
    def engine(self) -> str:
        """The engine that runs the graph (a name in :data:`edgeinfer.engines.ENGINES`)."""
        return self.session.engine

    @property
    def engine_version(self) -> str:
        return self.session.version

    @property
    def fixed_batch(self) -> int | None:
        """The batch size baked into the model's input, or None when the batch axis is dynamic."""
        return self._fixed_batch

    def _check_io(self) -> None:
        importers.check_io(self.spec, self.session, self.path)

    # -- running ----------------------------------------------------------------------------------
    def preprocess(self, image: ImageInput, *, color: str = "bgr") -> np.ndarray:
        """The float32 (C, H, W) RGB input the training transform made for ``image``: what a torch
        ``transform(img)`` gives, to compare with it. Under an input contract (BGR, NHWC, uint8) the graph
        receives another array: :meth:`graph_input` gives that one."""
        return self.preprocessor(image, color=color)

    def graph_input(self, image: ImageInput, *, color: str = "bgr") -> np.ndarray:
        """The image tensor the graph receives for ``image`` (batch of one): :meth:`preprocess` with the input
        contract applied -- its layout, dtype and channel order."""
        return contract.image_feed(self.spec.input, self.preprocessor(image, color=color)[None])

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a preprocessed (N, C, H, W) float32 batch and return its raw output."""
        return self._run_outputs(batch, (self.spec.output.name,))[0]

    def detect(self, images: Iterable[ImageInput], *, color: str = "bgr", conf: float | None = None,
               iou: float | None = None, max_det: int | None = None,
               retina_masks: bool | None = None) -> list[Detections]:
        """Detections (boxes, scores, classes; keypoints or rotated boxes) of each image, in its own pixels.

        The images are decoded once; their sizes decide the letterbox (Ultralytics' rule: the minimal
        stride-aligned rectangle of a dynamic model only when all images have one size) and map the
        boxes back. ``conf``, ``iou``, ``max_det`` and ``retina_masks`` override the spec's postprocess section.
        """
        if not self.task.detector:
            raise SpecError(f"{self.path}: detect() needs a detector; this model's task is {self.spec.task!r}. "
                            "Use predict().")
        return self.results(images, color=color, conf=conf, iou=iou, max_det=max_det, retina_masks=retina_masks)

    def results(self, images: Iterable[ImageInput], *, color: str = "bgr", **options: Any) -> list[Result]:
        """The task's result for each image (prepare, infer, finish). Images whose inputs differ in size (a
        dynamic-size model, e.g. a segmenter resizing the shorter side) run in groups of one size.
        ``options`` go to the task (see :meth:`finish`)."""
        groups = self._inputs(images, color=color)
        out: list[Any] = [None] * sum(len(idx) for idx, _ in groups)
        for idx, prepared in groups:
            for i, r in zip(idx, self.finish(prepared, self.infer(prepared), **options)):
                out[i] = r
        return out

    # -- the three stages, for callers that time or overlap them (bench, stream) -------------------------
    def prepare(self, images: Iterable[ImageInput], *, color: str = "bgr") -> Prepared:
        """The model input for ``images`` with the (height, width) of each decoded image."""
        groups = self._inputs(images, color=color)
        if len(groups) > 1:
            raise ImageError(f"prepare: these images make inputs of different sizes for this dynamic-size model "
                             f"({sorted({p.batch.shape[1:] for _, p in groups})}); one batch holds one size. Use "
                             "results(), which runs each size on its own, or prepare them one by one.")
        return groups[0][1]

    def _inputs(self, images: Iterable[ImageInput], *, color: str) -> list[tuple[list[int], Prepared]]:
        """The images decoded once and preprocessed, as batches of one input size each: (the images' indices,
        their :class:`Prepared`), in first-seen order (one batch unless a dynamic-size model sizes them apart)."""
        decoded = [to_model_layout(im, self.spec.decode, color=color) for im in images]
        if not decoded:
            raise ImageError("expected at least one image, found none.")
        sizes = [tuple(px.shape[:2]) for px, _ in decoded]
        pre = self._preprocessor_for(sizes)
        if pre.spec.input.dynamic_size:
            arrays = [pre.check(pre.from_layout(px, ch)) for px, ch in decoded]
            groups: list[tuple[list[int], Prepared]] = []
            for shape in dict.fromkeys(a.shape for a in arrays):
                idx = [i for i, a in enumerate(arrays) if a.shape == shape]
                groups.append((idx, Prepared(np.stack([arrays[i] for i in idx]), [sizes[i] for i in idx])))
            return groups
        batch = np.empty((len(decoded), pre.spec.input.channels, *pre.spec.input.height_width), np.float32)
        for i, (px, ch) in enumerate(decoded):  # straight into the batch: no stacking copy
            pre.check(pre.from_layout(px, ch, out=batch[i]))
        return [(list(range(len(decoded))), Prepared(batch, sizes))]

    def infer(self, prepared: Prepared) -> list[np.ndarray]:
        """The outputs this model's task reads, for a :class:`Prepared` batch (its image sizes feed the extra
        inputs of a model that has them)."""
        if not isinstance(prepared, Prepared):
            raise TypeError(f"infer: expected the Prepared batch from Model.prepare() (it carries the images' sizes), "
                            f"found {type(prepared).__name__}. For a bare array use Model.run().")
        return self._run_outputs(prepared.batch, self.task.outputs(self.spec), prepared.sizes)

    @property
    def overlaps(self) -> bool:
        """Whether the engine runs the graph while the caller does something else (it has ``Session.submit``:
        OpenVINO), so that :meth:`submit` returns before the outputs are ready."""
        return callable(getattr(self.session, "submit", None))

    def submit(self, prepared: Prepared) -> engine_base.Pending:
        """A handle whose ``wait()`` gives what :meth:`infer` gives for ``prepared``. An engine with an asynchronous
        API (:attr:`overlaps`) starts the graph and returns at once, so several batches can be in flight; any other
        runs it now. The handle holds ``prepared``'s arrays until its outputs are in hand (the engine may read them
        in place): do not write into them before ``wait()`` returns."""
        if not isinstance(prepared, Prepared):
            raise TypeError(f"submit: expected the Prepared batch from Model.prepare(), found "
                            f"{type(prepared).__name__}.")
        names = self.task.outputs(self.spec)
        start = getattr(self.session, "submit", None)
        if start is None or (self.fixed_batch is not None and len(prepared) != self.fixed_batch):
            t = time.perf_counter()
            outputs = self.infer(prepared)
            return engine_base.Finished(outputs, t, time.perf_counter())
        return start(list(names), contract.feeds(self.spec.input, prepared.batch, prepared.sizes, self.path))

    def finish(self, prepared: Prepared, outputs: Sequence[np.ndarray], **options: Any) -> list[Result]:
        """The task's results (the task table's result type for each image) from ``infer``'s outputs.

        ``options``: ``top_k`` for classifiers; ``conf``, ``iou``, ``max_det``, ``retina_masks`` for detectors;
        ``scores`` (class probabilities at the output resolution) for semantic segmenters."""
        return self.task.finish(self.spec, outputs, prepared, **options)

    def _preprocessor_for(self, sizes: Sequence[tuple[int, int]]) -> Preprocessor:
        variant = tasks.batch_spec(self.spec, sizes)
        if variant is self.spec:
            return self.preprocessor
        if self._square is None:  # one variant only: the letterbox to the full square
            self._square = Preprocessor(variant, mode=self.preprocessor.mode)
        return self._square

    def _run_outputs(self, batch: np.ndarray, names: Sequence[str],
                     sizes: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
        """The named outputs for a (N, C, H, W) float32 RGB batch, fed as the model's input contract says
        (layout, dtype, channel order, extra inputs from ``sizes``); a model with a fixed batch of 1 is run
        image by image."""
        feed = contract.feeds(self.spec.input, batch, sizes, self.path)
        if self.fixed_batch is not None and batch.shape[0] != self.fixed_batch:
            if self.fixed_batch != 1:
                raise ModelError(f"{self.path}: the model has a fixed batch of {self.fixed_batch}; found "
                                 f"{batch.shape[0]}.")
            per = [self.session.run(list(names), {k: v[i:i + 1] for k, v in feed.items()})
                   for i in range(batch.shape[0])]
            return [np.concatenate(parts) for parts in zip(*per)]
        return self.session.run(list(names), feed)

    def predict(self, image: ImageInput, *, color: str = "bgr", top_k: int = 5, tta: str | None = "spec",
                merge: str | None = None) -> Result:
        """The task's result for one image: a :class:`Prediction` (classifier), :class:`Detections` (detector,
        pose, oriented boxes, instance segmenter), :class:`Segmentation` or :class:`Embedding`.

        Test-time augmentation (classifiers): ``tta="hflip"`` adds the mirrored input; ``"five_crop"`` replaces
        the centre crop by torchvision's FiveCrop (corners and centre of the resized image); ``"ten_crop"``
        adds their mirrors; ``"multiscale"`` resizes by the spec's TTA scales. Views are merged by the
        mean of probabilities (``merge="probabilities"``) or of logits (``merge="logits"``, then softmax).
        The default ``tta="spec"`` applies what the converter recorded (none unless it did); ``None``
        turns it off.
        """
        return self.predict_batch([image], color=color, top_k=top_k, tta=tta, merge=merge)[0]

    def predict_batch(self, images: Iterable[ImageInput], *, color: str = "bgr", top_k: int = 5,
                      tta: str | None = "spec", merge: str | None = None) -> list[Result]:
        """:meth:`predict` for several images in one model call (one per view with test-time augmentation)."""
        images = list(images)
        if tta == "spec":
            tta = self.spec.tta.mode if self.spec.tta is not None else None
        if tta is None:
            return self.results(images, color=color, top_k=top_k)
        if self.task.tta is None:
            raise SpecError(f"tta {tta!r}: test-time augmentation for a {self.spec.task} model is not supported "
                            "(the training tool's merge of augmented results is not reproduced). Use tta=None.")
        if merge is None:
            merge = self.spec.tta.merge if self.spec.tta is not None else "probabilities"
        if tta not in TTA_MODES or merge not in TTA_MERGES:
            raise ImageError(f"tta: expected one of {TTA_MODES} with merge one of {TTA_MERGES}, found "
                             f"{tta!r}/{merge!r}.")
        if self.spec.input.extra:
            raise SpecError(f"tta {tta!r}: this model takes extra inputs from the image's size "
                            f"({[e.name for e in self.spec.input.extra]}), which the augmented views would change. "
                            "Use tta=None.")
        views = [pre.batch(images, color=color) for pre in self._crop_preprocessors(tta)]
        if tta in ("hflip", "ten_crop"):
            views += [v[..., ::-1] for v in views]
        raw = self.run(np.concatenate(views))
        return self.task.tta(self.spec, raw.reshape(len(views), len(images), *raw.shape[1:]), merge=merge,
                             top_k=top_k)

    def _crop_preprocessors(self, tta: str) -> list[Preprocessor]:
        if tta == "hflip":
            return [self.preprocessor]
        if tta == "multiscale" and tta not in self._tta_cache:
            scales = self.spec.tta.scales if self.spec.tta is not None and self.spec.tta.scales else (0.875, 1.0, 1.143)
            resizes = [i for i, s in enumerate(self.spec.steps) if s.op == "resize"]
            if not resizes:
                raise SpecError("tta 'multiscale' needs a resize step in the spec to scale; this spec has none.")
            i, steps = resizes[0], list(self.spec.steps)
            size = steps[i].params["size"]
            self._tta_cache[tta] = [
                Preprocessor(dataclasses.replace(self.spec, steps=tuple(steps[:i] + [Step("resize", {
                    **steps[i].params, "size": (max(1, round(size * f)) if isinstance(size, int)
                                                else [max(1, round(v * f)) for v in size])})] + steps[i + 1:])),
                    mode=self.preprocessor.mode)
                for f in scales]
        if tta not in self._tta_cache:
            steps = list(self.spec.steps)
            crops = [i for i, s in enumerate(steps) if s.op == "center_crop"]
            if not crops:
                raise SpecError(f"tta {tta!r} needs a centre crop in the spec to move; this spec has none. "
                                "Use tta='hflip'.")
            i = crops[-1]
            self._tta_cache[tta] = [
                Preprocessor(dataclasses.replace(self.spec, steps=tuple(
                    steps[:i] + [Step("center_crop", {**steps[i].params, "anchor": a})] + steps[i + 1:])),
                    mode=self.preprocessor.mode)
                for a in ("top_left", "top_right", "bottom_left", "bottom_right", "center")]
        return self._tta_cache[tta]

    def self_test(self) -> SelfTestResult:
        """Run the spec's embedded self-test image and compare with the output recorded at export."""
        st = self.spec.self_test
        if st is None:
            raise SpecError(f"{self.path}: the spec has no self-test vector. Re-export with converters.export(...), "
                            "which records one.")
        probe = self.task.selftest
        if probe is None:
            raise SpecError(f"{self.path}: a {self.spec.task} model has no self-test vector.")
        img = decode(base64.b64decode(st.image_png), exif_orientation=False, source="self-test image")
        raw = self.infer(self.prepare([img], color="bgr"))[0]
        got = np.asarray(probe(raw), dtype=np.float64).reshape(-1)
        want = np.asarray(st.expected, dtype=np.float64)
        if got.shape != want.shape:
            return SelfTestResult(False, float("inf"), st.atol, self.providers)
        diff = float(np.max(np.abs(got - want)))
        return SelfTestResult(diff <= st.atol, diff, st.atol, self.providers)

    def to_dict(self) -> dict[str, Any]:
        """What ``edgeinfer inspect --json`` prints and ``GET /model`` of ``edgeinfer serve`` answers."""
        return {"path": self.path, "engine": self.engine, "engine_version": self.engine_version,
                "artifact": None if self.session.artifact is None else dict(self.session.artifact),
                "providers": list(self.providers), "spec": self.spec.to_dict()}

    def __repr__(self) -> str:
        return (f"Model({self.path!r}, engine={self.engine!r}, device={self.device!r}, "
                f"providers={list(self.providers)})")


def load(path: str | os.PathLike, *, engine: str = engines.DEFAULT,
         device: "str | os.PathLike | providers.Profile" = "cpu", threads: int | None = None,
         preprocess: str | None = None, session_config: dict[str, str] | None = None,
         strict: bool = False, spec: Any = None, labels: Any = None, output_kind: str | None = None,
         hf_backend: str | None = None, imgsz: int | Sequence[int] | None = None) -> Model:
    """Load an ONNX model with its spec and return a ready :class:`Model`.

    The spec is the one stored in the file; Ultralytics exports are read from their own metadata.
    ``spec`` gives it beside a file that has none or may not be written (a read-only model): any source
    :func:`edgeinfer.importers.resolve` accepts -- an edgeinfer spec, a plain ``{size, mean, std,
    interpolation}`` dict, a Hugging Face ``preprocessor_config.json`` (``hf_backend`` "pil" or
    "torchvision" when its class name does not say), or on a workstation a torchvision/timm transform or
    ``"timm:NAME"``. ``labels`` (a list or a text file) and ``output_kind`` override what the source says.

    ``device`` is a profile name from ``devices/`` or a path to a profile file: it picks the execution
    providers (a missing preferred one falls back with a :class:`~edgeinfer.providers.ProviderFallbackWarning`,
    or raises :class:`~edgeinfer.errors.ProviderError` when ``strict``), the session settings, the
    precision variant to prefer (``model.fp16.onnx`` beside ``model.onnx``, when it exists) and the
    preprocessing mode. ``preprocess`` and ``threads`` override the profile; ``"exact"`` reproduces the
    training library's pixels, ``"fast"`` trades a measured fraction of a level for speed.
    ``session_config`` entries go to ``SessionOptions.add_session_config_entry`` (OpenVINO: its compile config;
    ncnn: its options by name). ``imgsz`` (an int or [h, w]) runs a letterboxing detector with a dynamic input at
    that size, as Ultralytics' ``predict(imgsz=...)`` does (rounded up to the stride); a graph fixed at another
    size is refused.

    ``engine`` runs the graph: ``"onnxruntime"`` (the profile's providers) or another name in
    :data:`edgeinfer.engines.ENGINES` (``"openvino"``, ``"ncnn"``), each an optional extra (a missing one is a
    :class:`~edgeinfer.errors.DependencyError` naming the pip command). An engine reads the ``.onnx`` itself, or the
    artifact ``edgeinfer convert MODEL.onnx --engine NAME`` wrote beside it (ncnn needs it), refused when made for
    another spec. ``"auto"`` runs what ``edgeinfer tune`` chose on this device (``model.tune.json`` beside the model:
    engine, precision, threads, provider; ``threads`` still overrides) when it was made for this profile and this
    spec; a choice that does not fit is ignored with an :class:`~edgeinfer.engines.EngineFallbackWarning`. Without
    one it takes the device profile's ``engines`` in order: the first one installed here that can read the model
    (an EngineFallbackWarning says each one skipped). :attr:`Model.engine` says which runs.
    Preprocessing, decoders, NMS and geometry are the same whatever the engine.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: expected an .onnx file, found {'a directory' if p.is_dir() else 'nothing'}.")
    profile = device if isinstance(device, providers.Profile) else providers.read_profile(device)
    if engine == engines.AUTO:
        tuned = choice.read(p, profile, strict=strict)
        if tuned is not None:
            model = load(p, engine=tuned.engine, device=choice.profile_for(tuned, profile),
                         threads=tuned.threads if threads is None else threads, preprocess=preprocess,
                         session_config=session_config, strict=strict, spec=spec, labels=labels,
                         output_kind=output_kind, hf_backend=hf_backend, imgsz=imgsz)
            try:
                have = engine_base.spec_hash(read_spec(model.session, p))
            except SpecMissingError:
                have = None
            if choice.check(tuned, have, p, strict=strict):
                return model
    preferred = variant_path(p, profile.precision)
    if preferred != p and preferred.is_file():
        p = preferred
    if engine == engines.AUTO:
        engine = engines.choose(profile, p, strict=strict)
    session = engines.adapter(engine).open(p, profile=profile, threads=threads, strict=strict,
                                           session_config=session_config)
    if spec is None and labels is None and output_kind is None:
        resolved = read_spec(session, p)
    else:
        resolved = importers.resolve(spec if spec is not None else read_spec(session, p), session, path=p,
                                   labels=labels, output_kind=output_kind, hf_backend=hf_backend)
    if imgsz is not None:
        resolved = importers.at_size(resolved, imgsz, p)
    if session.artifact is not None:  # bound to the spec the file carries, whatever overrides this call adds
        try:
            bound = read_spec(session, p)
        except SpecMissingError:
            bound = resolved
        engine_base.check_artifact(session, bound, str(p))
    return Model(session, resolved, path=str(p), device=profile.name, requested=session.requested,
                 preprocess=preprocess or profile.preprocess)
