"""Faster is measured, not assumed: try what this device can run, keep the fastest faithful configuration.

Candidates are engine x precision x provider x threads:

- engines: the device profile's ``engines`` (or the ones asked for) that are installed here. An engine that reads
  the ``.onnx`` itself runs the fp32 model and each precision variant; one that runs only its own files
  (``needs_artifact`` in :data:`edgeinfer.engines.ENGINES`) runs the fp32 model's files: the ones ``edgeinfer
  convert`` wrote beside the model when they are there and bound to its spec (row ``artifact="beside"``), else
  files converted for this run in a temporary folder (``artifact="converted"``);
- precisions: fp32 and the variants ``converters.optimize`` makes (fp16, int8 calibrated on the images);
- providers: the profile's execution providers available here, for engines that run on them;
- threads: 1 and the machine's CPU count, or the ones asked for.

Each candidate runs through the edgeinfer runtime on the images (and the spec's self-test image) and is judged
by the task's own gate (:mod:`edgeinfer.tasks.gates`: probabilities, boxes, class maps, vectors) against ONNX
Runtime on the fp32 model; only the ones that pass may be chosen. Timing is side by side: shuffled rounds, the
same prepared inputs for every candidate. The fastest passing one is written beside the model as tune's choice
(``MODEL.tune.json``, read by ``load(engine="auto")``: :mod:`edgeinfer.engines.choice`) with the variant or
engine files it needs, and as a device profile (``device=`` it).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgeinfer import engines as engine_table
from edgeinfer.engines import base, choice
from edgeinfer.errors import EdgeInferError, ImageError
from edgeinfer.model import read_spec
from edgeinfer.providers import Profile, read_profile
from edgeinfer.tools.bench import emulation, environment
from edgeinfer.tools.files import write_bytes_atomic, write_text_atomic
from edgeinfer.tools.reports import SCHEMAS


@dataclass(frozen=True)
class TuneRow:
    """One configuration measured: its median latency per call and the task gate's verdict against fp32 ORT."""

    engine: str
    engine_version: str
    precision: str
    provider: str
    threads: int
    median_ms: float
    passes: bool
    gate: Mapping[str, Any] = field(default_factory=dict)  # the gate's figures (edgeinfer.tasks.gates)
    artifact: str | None = None  # engines that run only their own files: "beside" the model or "converted" here

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "gate": dict(self.gate)}


@dataclass(frozen=True)
class TuneReport:
    model: str
    device: str
    task: str
    images: int
    tolerances: Mapping[str, float]  # what the gate was given beyond its defaults
    rows: tuple[TuneRow, ...]
    chosen: TuneRow | None
    profile_path: str | None
    variant_path: str | None
    artifact_path: str | None = None  # the engine files the choice runs, written beside the model
    choice_path: str | None = None  # MODEL.tune.json, what engine="auto" reads
    skipped: tuple[Mapping[str, Any], ...] = ()  # engines or precisions not measured, and why
    emulated: str | None = None  # why this machine is known to be emulated (edgeinfer.tools.bench.emulation)
    environment: dict[str, Any] | None = None  # edgeinfer.tools.bench.environment() of the fp32 reference session

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMAS["tune"], "model": self.model, "device": self.device, "task": self.task,
                "images": self.images, "tolerances": dict(self.tolerances), "environment": self.environment,
                "rows": [r.to_dict() for r in self.rows], "chosen": self.chosen.to_dict() if self.chosen else None,
                "skipped": [dict(s) for s in self.skipped], "profile_path": self.profile_path,
                "variant_path": self.variant_path, "artifact_path": self.artifact_path,
                "choice_path": self.choice_path, "emulated": self.emulated}


def _profile_toml(p: Profile) -> str:
    lines = [f'name = "{p.name}"', f'description = "{p.description}"', f'precision = "{p.precision}"',
             f'preprocess = "{p.preprocess}"', "engines = [" + ", ".join(f'"{e}"' for e in p.engines) + "]", "",
             "[session]", f"intra_op_threads = {p.intra_op_threads}",
             f"inter_op_threads = {p.inter_op_threads}", f'graph_optimization = "{p.graph_optimization}"',
             f'execution_mode = "{p.execution_mode}"']
    for prov in p.providers:
        lines += ["", "[[providers]]", f'name = "{prov.name}"']
        if prov.options:
            lines.append("options = { " + ", ".join(f'{k} = "{v}"' for k, v in prov.options.items()) + " }")
    return "\n".join(lines) + "\n"


def _engine_files(src: Path, link: Path, name: str, items: Sequence[Any], skipped: list) -> tuple[Path, str] | None:
    """The model path whose engine files ``name`` runs, and where they came from: the ones beside ``src`` when they
    load and are bound to its spec, else converted for this run beside ``link`` (the model linked into the temporary
    folder). None, with the reason in ``skipped``, when neither works."""
    import edgeinfer
    from converters.engines import convert

    if base.artifact_dir(src, name).is_dir():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                edgeinfer.load(src, engine=name)
            return src, "beside"
        except EdgeInferError:
            pass  # stale (another spec) or unreadable: converted afresh below, and replaced only if chosen
    try:
        convert(link, engine=name, images=items)
    except EdgeInferError as exc:  # refused by the gate, not expressible, or a missing converter
        skipped.append({"engine": name, "precision": "fp32", "reason": f"convert failed: {exc}"})
        return None
    return link, "converted"


def tune(model_path: str | os.PathLike, *, device: str | os.PathLike = "cpu", images: Any,
         engines: Sequence[str] | None = None, precisions: Sequence[str] = ("fp32", "fp16", "int8"),
         threads: Sequence[int] | None = None, rounds: int = 20, tolerances: Mapping[str, float] | None = None,
         out_profile: str | os.PathLike | None = None) -> TuneReport:
    """Measure every candidate configuration, keep the ones within the task's gate, and write the fastest as tune's
    choice beside the model (with the files it needs) and as a device profile.

    ``engines`` defaults to the profile's; names not installed here are reported in ``skipped``. ``tolerances`` go to
    the task's gate (e.g. ``{"atol": 2e-2}`` lets a classifier's int8 variant compete).
    """
    import onnxruntime as ort

    import edgeinfer
    from converters.engines import _frames, samples
    from converters.optimize import _images, variant_bytes

    src = Path(model_path)
    profile = read_profile(device)
    items = _images(images)
    if not items:
        raise ImageError("tune needs images (a folder): they calibrate int8 and check every candidate against fp32.")
    reference = edgeinfer.load(src)  # fp32 on ONNX Runtime's CPU provider: what every candidate is judged against
    if reference.task.gate is None or reference.task.sample is None:
        raise EdgeInferError(f"{src}: tune judges candidates by the task's gate; task {reference.spec.task!r} has none.")
    frames = _frames(reference, items)
    expected = samples(reference, frames)
    inputs = [reference.prepare([frame]) for frame in frames]
    tol = dict(tolerances or {})
    accepted = [n for n, a in inspect.signature(reference.task.gate).parameters.items() if a.kind == a.KEYWORD_ONLY]
    if set(tol) - set(accepted):
        raise EdgeInferError(f"tune tolerances: the {reference.spec.task} gate takes {accepted}, found "
                             f"{sorted(set(tol) - set(accepted))}. Use those names (e.g. {accepted[0]}=...).")
    skipped: list[dict[str, Any]] = []
    wanted = list(engines or profile.engines)
    for name in wanted:
        engine_table.entry(name)  # an unknown name is refused before any work
    usable = [n for n in wanted if engine_table.installed(n)]
    skipped += [{"engine": n, "precision": None, "reason": f"not installed here ({engine_table.entry(n).install})"}
                for n in wanted if n not in usable]
    available = set(ort.get_available_providers())
    thread_counts = list(threads or sorted({1, os.cpu_count() or 1}))
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        link = tmp / src.name
        link.symlink_to(src.resolve())
        files = {"fp32": src}
        for precision in precisions:
            if precision == "fp32":
                continue
            path = base.variant_path(link, precision)
            try:
                path.write_bytes(variant_bytes(precision, src, reference, items))
            except Exception as exc:  # onnxruntime's converters raise their own errors on graphs they cannot take
                skipped.append({"engine": None, "precision": precision, "reason": f"variant failed: {exc}"})
                continue
            files[precision] = path
        configs: dict[tuple[str, str, str, int], tuple[Any, str | None]] = {}
        for name in usable:
            row = engine_table.entry(name)
            runs, artifact = files, None
            if row.needs_artifact:
                found = _engine_files(src, link, name, items, skipped)
                if found is None:
                    continue
                runs, artifact = {"fp32": found[0]}, found[1]
            requests = [p for p in profile.providers if p.name in available] if row.providers else [None]
            for precision, path in runs.items():
                for req in requests:
                    for n in thread_counts:
                        prof = dataclasses.replace(profile, providers=(req,) if req else profile.providers,
                                                   intra_op_threads=n, precision="fp32",
                                                   config={"session.intra_op.allow_spinning": "0"})
                        try:
                            with warnings.catch_warnings():
                                warnings.simplefilter("ignore")
                                model = edgeinfer.load(path, engine=name, device=prof, threads=n)
                        except EdgeInferError as exc:
                            skipped.append({"engine": name, "precision": precision, "reason": f"load failed: {exc}"})
                            break
                        provider = req.name if req else model.providers[0]
                        configs[(name, precision, provider, n)] = (model, artifact)
        samples_s: dict[tuple[str, str, str, int], list[float]] = {k: [] for k in configs}
        for model, _ in configs.values():
            model.infer(inputs[0])  # first calls allocate and compile; no candidate pays for it in the rounds
        rng = random.Random(0)
        for r in range(rounds):
            order = list(configs.items())
            rng.shuffle(order)
            x = inputs[r % len(inputs)]
            for key, (model, _) in order:
                t = time.perf_counter()
                model.infer(x)
                samples_s[key].append(time.perf_counter() - t)
        rows = []
        for key, (model, artifact) in configs.items():
            verdict = reference.task.gate(expected, samples(model, frames), **tol)
            rows.append(TuneRow(engine=key[0], engine_version=model.engine_version, precision=key[1],
                                provider=key[2], threads=key[3], median_ms=statistics.median(samples_s[key]) * 1e3,
                                passes=bool(verdict.passed), gate=verdict.figures, artifact=artifact))
        rows.sort(key=lambda r: r.median_ms)
        chosen = next((r for r in rows if r.passes), None)
        profile_path = variant_path = artifact_path = choice_path = None
        if chosen is not None:
            providers = tuple(p for p in profile.providers if p.name == chosen.provider)
            tuned = dataclasses.replace(
                profile, name=f"{profile.name}-tuned", precision=chosen.precision, config={},
                description=f"tuned for {src.name}: {chosen.engine}, {chosen.precision}, {chosen.provider}, "
                            f"{chosen.threads} threads, {chosen.median_ms:.2f} ms",
                engines=(chosen.engine,) + tuple(e for e in profile.engines if e != chosen.engine),
                providers=providers + tuple(p for p in profile.providers if p.name != chosen.provider),
                intra_op_threads=chosen.threads)
            profile_path = str(out_profile or src.with_name(f"{src.stem}.{tuned.name}.toml"))
            write_text_atomic(profile_path, _profile_toml(tuned))
            if chosen.precision != "fp32":
                variant_path = str(base.variant_path(src, chosen.precision))
                write_bytes_atomic(variant_path, files[chosen.precision].read_bytes())
            if chosen.artifact is not None:
                artifact_path = str(base.artifact_dir(src, chosen.engine))
                if chosen.artifact == "converted":
                    staged = Path(tempfile.mkdtemp(prefix=f".{src.stem}.{chosen.engine}.", dir=src.parent))
                    shutil.copytree(base.artifact_dir(link, chosen.engine), staged, dirs_exist_ok=True)
                    shutil.rmtree(artifact_path, ignore_errors=True)
                    os.replace(staged, artifact_path)
            made = choice.Choice(
                engine=chosen.engine, engine_version=chosen.engine_version, precision=chosen.precision,
                provider=chosen.provider, threads=chosen.threads, median_ms=chosen.median_ms,
                spec_sha256=base.spec_hash(read_spec(reference.session, src)), device=profile.name,
                profile=tuned.name, model=src.name,
                rows=tuple({k: getattr(r, k) for k in ("engine", "precision", "provider", "threads", "median_ms",
                                                       "passes")} for r in rows))
            choice_path = str(choice.path_for(src))
            write_text_atomic(choice_path, json.dumps(made.to_dict(), indent=1) + "\n")
    return TuneReport(model=str(src), device=profile.name, task=reference.spec.task, images=len(frames),
                      tolerances=tol, rows=tuple(rows), chosen=chosen, profile_path=profile_path,
                      variant_path=variant_path, artifact_path=artifact_path, choice_path=choice_path,
                      skipped=tuple(skipped), emulated=emulation(),
                      environment=environment(reference.session, reference.requested_providers, None))

