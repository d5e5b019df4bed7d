"""Faster is measured, not assumed: try what this device can run, keep the fastest faithful configuration.

Candidates are the precision variants (fp32, fp16, int8) x the device profile's providers available
here x thread counts. Each is timed side by side (shuffled rounds, the same preprocessed inputs) and
checked against the fp32 model on the CPU provider; the fastest one that passes the agreement gate is
written as a device profile (and its variant file beside the model).
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeinfer.tools.bench import emulation, environment
from edgeinfer.errors import ImageError
from edgeinfer.tools.files import write_text_atomic
from edgeinfer.providers import Profile, ProviderRequest, read_profile
from edgeinfer.tools.reports import SCHEMAS


@dataclass(frozen=True)
class TuneRow:
    precision: str
    provider: str
    threads: int
    median_ms: float
    top1_agreement: float
    max_abs_diff: float
    passes: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TuneReport:
    model: str
    device: str
    images: int
    min_agreement: float
    rows: tuple[TuneRow, ...]
    chosen: TuneRow | None
    profile_path: str | None
    variant_path: str | None
    emulated: str | None = None  # why this machine is known to be emulated (edgeinfer.tools.bench.emulation)
    environment: dict[str, Any] | None = None  # edgeinfer.tools.bench.environment() of the fp32 reference session

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMAS["tune"], "model": self.model, "device": self.device, "images": self.images,
                "min_agreement": self.min_agreement, "environment": self.environment,
                "rows": [r.to_dict() for r in self.rows], "chosen": self.chosen.to_dict() if self.chosen else None,
                "profile_path": self.profile_path, "variant_path": self.variant_path, "emulated": self.emulated}


def _profile_toml(p: Profile) -> str:
    lines = [f'name = "{p.name}"', f'description = "{p.description}"', f'precision = "{p.precision}"',
             f'preprocess = "{p.preprocess}"', "", "[session]", f"intra_op_threads = {p.intra_op_threads}",
             f"inter_op_threads = {p.inter_op_threads}", f'graph_optimization = "{p.graph_optimization}"',
             f'execution_mode = "{p.execution_mode}"']
    for prov in p.providers:
        lines += ["", "[[providers]]", f'name = "{prov.name}"']
        if prov.options:
            lines.append("options = { " + ", ".join(f'{k} = "{v}"' for k, v in prov.options.items()) + " }")
    return "\n".join(lines) + "\n"


def tune(model_path: str | os.PathLike, *, device: str | os.PathLike = "cpu", images: Any,
         precisions: Sequence[str] = ("fp32", "fp16", "int8"), threads: Sequence[int] | None = None,
         rounds: int = 20, min_agreement: float = 0.99, out_profile: str | os.PathLike | None = None) -> TuneReport:
    """Measure every candidate configuration and write the fastest faithful one as a profile."""
    import onnxruntime as ort

    import edgeinfer
    from converters.optimize import _images, optimize

    src = Path(model_path)
    base = read_profile(device)
    items = _images(images)
    if not items:
        raise ImageError("tune needs images (a folder): they calibrate int8 and check agreement.")
    reference = edgeinfer.load(src)
    inputs, ref_scores = [], []
    for item in items:
        try:
            inputs.append(reference.preprocessor.batch([item]))
        except ImageError:
            continue
        ref_scores.append(reference.predict(item).scores)
    ref = np.stack(ref_scores)
    available = set(ort.get_available_providers())
    providers = [p for p in base.providers if p.name in available]
    thread_counts = list(threads or sorted({1, os.cpu_count() or 1}))
    with tempfile.TemporaryDirectory() as tmpdir:
        files = {"fp32": src}
        for precision in precisions:
            if precision != "fp32":
                files[precision] = Path(tmpdir) / f"{src.stem}.{precision}.onnx"
                optimize(src, files[precision], kind=precision, calibration=items, force=True)
        configs: dict[tuple[str, str, int], Any] = {}
        for precision, path in files.items():
            for prov in providers:
                for n in thread_counts:
                    prof = dataclasses.replace(base, providers=(prov,), intra_op_threads=n, precision="fp32",
                                               config={"session.intra_op.allow_spinning": "0"})
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        configs[(precision, prov.name, n)] = edgeinfer.load(path, device=prof)
        samples: dict[tuple[str, str, int], list[float]] = {k: [] for k in configs}
        rng = random.Random(0)
        for r in range(rounds):
            order = list(configs.items())
            rng.shuffle(order)
            x = inputs[r % len(inputs)]
            for key, model in order:
                t = time.perf_counter()
                model.run(x)
                samples[key].append(time.perf_counter() - t)
        rows = []
        for key, model in configs.items():
            got = np.stack([model.predict(item).scores for item in items[:len(ref)]])
            agreement = float(np.mean(got.argmax(1) == ref.argmax(1)))
            rows.append(TuneRow(precision=key[0], provider=key[1], threads=key[2],
                                median_ms=statistics.median(samples[key]) * 1e3, top1_agreement=agreement,
                                max_abs_diff=float(np.max(np.abs(got.astype(np.float64) - ref))),
                                passes=agreement >= min_agreement))
        rows.sort(key=lambda r: r.median_ms)
        chosen = next((r for r in rows if r.passes), None)
        profile_path = variant_path = None
        if chosen is not None:
            prov = next(p for p in providers if p.name == chosen.provider)
            rest = tuple(p for p in base.providers if p.name != chosen.provider)
            tuned = dataclasses.replace(base, name=f"{base.name}-tuned", precision=chosen.precision,
                                        description=f"tuned for {src.name}: {chosen.precision}, {chosen.provider}, "
                                                    f"{chosen.threads} threads, {chosen.median_ms:.2f} ms",
                                        providers=(prov,) + rest, intra_op_threads=chosen.threads, config={})
            profile_path = str(out_profile or src.with_name(f"{src.stem}.{tuned.name}.toml"))
            write_text_atomic(profile_path, _profile_toml(tuned))
            if chosen.precision != "fp32":
                variant_path = str(src.with_name(f"{src.stem}.{chosen.precision}{src.suffix}"))
                shutil.copyfile(files[chosen.precision], variant_path + ".tmp")
                os.replace(variant_path + ".tmp", variant_path)
    return TuneReport(model=str(src), device=base.name, images=len(ref), min_agreement=min_agreement,
                      rows=tuple(rows), chosen=chosen, profile_path=profile_path, variant_path=variant_path,
                      emulated=emulation(),
                      environment=environment(reference.session, reference.requested_providers, None))
