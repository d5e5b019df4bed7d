"""Benchmarking a deployed model: latency percentiles, throughput by batch size, the per-stage split,
memory and cold start, with the environment each figure was measured in.

The result is plain data (:class:`BenchResult`) whose ``to_dict()`` follows the documented schema
``edgeinfer.bench/1`` (see :data:`SCHEMA_DOC`); ``edgeinfer bench --json`` writes exactly that.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import onnxruntime as ort

from edgeinfer.errors import ImageError, SpecError
from edgeinfer.pipeline.images import IMAGE_SUFFIXES, decode, image_files
from edgeinfer.model import load
from edgeinfer.tools.reports import SCHEMAS

SCHEMA = SCHEMAS["bench"]
STAGES = ("decode", "preprocess", "inference", "postprocess")
SCHEMA_DOC = """edgeinfer.bench/1
  schema: "edgeinfer.bench/1"
  model: path; device: profile name; preprocess: "exact" | "fast"
  environment: {engine, engine_version, providers_used[], providers_requested[], onnxruntime, edgeinfer, python, numpy, opencv,
                cpu_model, cpu_count, intra_op_threads (0 = ONNX Runtime default), platform,
                machine (the architecture, e.g. x86_64, aarch64), host (the machine's network name),
                emulated (null, or why the process is known to run under an emulator: its timings
                are not the device's)}
  images: {count, source ("folder" | "built-in"), skipped[] (undecodable files), mean_width, mean_height}
  runs, warmup: calls timed per batch size, untimed calls before them
  batches: [{batch, latency_ms: {p50, p90, p99, mean, std, min, max}, throughput_ips,
             stages_ms: {decode, preprocess, inference, postprocess} (means per call)}]
  peak_rss_mb: peak resident memory of the benchmarking process
  cold_start_s: {total (process start to first prediction), interpreter, import, load, first_prediction}
                or null when skipped
  tta: null, or {mode, mean_abs_score_change, max_abs_score_change, top1_changed (share of images)}
       when run with tta (latencies then include the mirrored pass)
"""


def _percentiles(ms: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "std": float(ms.std()),
            "min": float(ms.min()), "max": float(ms.max())}


@dataclass(frozen=True)
class BatchResult:
    batch: int
    latency_ms: dict[str, float]
    throughput_ips: float
    stages_ms: dict[str, float]
    samples_ms: tuple[float, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "latency_ms": self.latency_ms, "throughput_ips": self.throughput_ips,
                "stages_ms": self.stages_ms}


@dataclass(frozen=True)
class BenchResult:
    """Everything one benchmark run measured, with the environment it ran in."""

    model: str
    device: str
    preprocess: str
    environment: dict[str, Any]
    images: dict[str, Any]
    runs: int
    warmup: int
    batches: tuple[BatchResult, ...]
    peak_rss_mb: float
    cold_start_s: dict[str, float] | None
    tta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "model": self.model, "device": self.device, "preprocess": self.preprocess,
                "environment": self.environment, "images": self.images, "runs": self.runs,
                "warmup": self.warmup, "batches": [b.to_dict() for b in self.batches],
                "peak_rss_mb": self.peak_rss_mb, "cold_start_s": self.cold_start_s, "tta": self.tta}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def cpu_model() -> str:
    """The CPU's marketing name where the OS tells it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Userlands a kernel runs natively: a 32-bit process on a 64-bit kernel of the same family is not emulated.
_NATIVE = {"x86_64": {"x86_64", "i386", "i486", "i586", "i686"}, "aarch64": {"aarch64", "armv7l", "armv8l", "armv6l"}}


def emulation() -> str | None:
    """Why this process is known to run under an instruction-set emulator, or None when nothing says so.

    The honest signal is the kernel's own architecture (``/proc/sys/kernel/arch``): qemu user-mode
    emulation rewrites ``uname`` to the guest's machine but not that file, so an aarch64 process on an
    x86_64 kernel is emulated. A qemu interpreter registered for this very architecture (binfmt_misc)
    and the marker that ``./edge arm`` sets (``EDGEINFER_EMULATOR``) are named beside it. Timings taken
    under emulation say nothing about the device (qemu is 17-28x slower here and its costs differ per op).
    """
    machine = platform.machine()
    reasons = []
    try:
        kernel = Path("/proc/sys/kernel/arch").read_text().strip()
    except OSError:
        kernel = ""
    if kernel and machine and kernel != machine and machine not in _NATIVE.get(kernel, {kernel}):
        reasons.append(f"the kernel is {kernel} but this process is {machine}")
    try:
        if Path(f"/proc/sys/fs/binfmt_misc/qemu-{machine}").read_text().startswith("enabled"):
            reasons.append(f"binfmt_misc runs {machine} programs through qemu-{machine}")
    except OSError:
        pass
    marker = os.environ.get("EDGEINFER_EMULATOR")
    if marker:
        reasons.append(f"EDGEINFER_EMULATOR={marker}")
    return "; ".join(reasons) or None


def environment(session: Any, requested: Sequence[str], threads: int | None) -> dict[str, Any]:
    """The facts a report needs to be compared with another: the engine and its version, the providers, the
    machine. ``session`` is an engine session (:mod:`edgeinfer.engines`)."""
    import edgeinfer

    return {"engine": getattr(session, "engine", "onnxruntime"),
            "engine_version": getattr(session, "version", ort.__version__),
            "providers_used": list(session.get_providers()), "providers_requested": list(requested),
            "onnxruntime": ort.__version__, "edgeinfer": edgeinfer.__version__,
            "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "intra_op_threads": int(threads or 0),
            "platform": platform.platform(), "machine": platform.machine(), "host": platform.node(),
            "emulated": emulation()}


def builtin_images() -> list[bytes]:
    """Four encoded frames (JPEG and PNG, 640x480 and 1280x720) made from the package's own pixels,
    for when no folder is given. Real photos give more meaningful decode figures: pass --images."""
    y, x = np.mgrid[0:720, 0:1280]
    frame = np.stack([(x * 255 // 1279), (y * 255 // 719), ((x // 40 + y // 40) % 2) * 180 + 30], -1).astype(np.uint8)
    frame = cv2.GaussianBlur(frame, (0, 0), 1.5)
    small = cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA)
    out = []
    for img, ext in ((frame, ".jpg"), (small, ".jpg"), (frame, ".png"), (small, ".png")):
        ok, buf = cv2.imencode(ext, img)
        if ok:
            out.append(buf.tobytes())
    return out


def folder_images(folder: str | os.PathLike, limit: int = 256) -> list[tuple[str, bytes]]:
    files = image_files(folder)[:limit]
    if not files:
        raise ImageError(f"{folder}: expected a folder with images ({sorted(IMAGE_SUFFIXES)}), found none.")
    return [(str(p), p.read_bytes()) for p in files]


def cold_start(model_path: str | os.PathLike, image: bytes, *, device: str = "cpu",
               engine: str = "onnxruntime") -> dict[str, float]:
    """Time a fresh process: interpreter start, ``import edgeinfer``, load, first prediction."""
    code = (
        "import time, sys; t0 = time.perf_counter(); import edgeinfer; t1 = time.perf_counter();"
        f"m = edgeinfer.load(sys.argv[1], device={device!r}, engine={engine!r}); t2 = time.perf_counter();"
        "m.predict(open(sys.argv[2], 'rb').read()); t3 = time.perf_counter();"
        "print(t1 - t0, t2 - t1, t3 - t2)"
    )
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".img", delete=False) as f:
        f.write(image)
        img_path = f.name
    try:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, str(model_path), img_path], capture_output=True,
                             text=True, check=True)
        total = time.perf_counter() - start
    finally:
        os.unlink(img_path)
    imp, ld, first = (float(v) for v in out.stdout.split())
    return {"total": total, "interpreter": total - imp - ld - first, "import": imp, "load": ld,
            "first_prediction": first}


def bench(model_path: str | os.PathLike, *, device: str = "cpu", engine: str = "onnxruntime", batches: Sequence[int] = (1,),
          images: str | os.PathLike | None = None, runs: int = 50, warmup: int = 5, threads: int | None = None,
          preprocess: str | None = None, measure_cold_start: bool = True, tta: str | None = None,
          progress: Callable[[int, int], None] | None = None) -> BenchResult:
    """Benchmark ``model_path`` end to end (encoded image in, prediction out) and return the figures.

    Each timed call decodes ``batch`` encoded images, preprocesses them, runs the model once on the
    batch and formats the predictions; every stage is timed. ``progress(done, total)`` is called after
    each timed call. ``engine`` runs the graph (:mod:`edgeinfer.engines`); the report's environment names it and
    its version.
    """
    if runs < 1 or warmup < 0 or any(b < 1 for b in batches):
        raise ValueError(f"runs >= 1, warmup >= 0 and batch sizes >= 1 expected, found {runs}, {warmup}, {list(batches)}")
    model = load(model_path, engine=engine, device=device, threads=threads, preprocess=preprocess)
    if tta is not None and model.task.tta is None:
        raise SpecError(f"bench --tta: test-time augmentation is for classifiers; {model_path} is a "
                        f"{model.spec.task} model.")
    exif = model.spec.decode.exif_orientation
    skipped: list[str] = []
    if images is not None:
        encoded, shapes = [], []
        for name, data in folder_images(images):
            try:
                shapes.append(decode(data, exif_orientation=exif, source=name).shape)
                encoded.append(data)
            except ImageError:
                skipped.append(name)  # reported in the result, not fatal
        if not encoded:
            raise ImageError(f"{images}: none of the {len(skipped)} image files could be decoded.")
        source = "folder"
    else:
        encoded, source = builtin_images(), "built-in"
        shapes = [decode(b, exif_orientation=exif).shape for b in encoded]
    total_calls = len(batches) * runs
    done = 0
    results = []
    cursor = 0
    for b in batches:
        samples, stages = [], {s: [] for s in STAGES}
        for i in range(warmup + runs):
            chunk = [encoded[(cursor + k) % len(encoded)] for k in range(b)]
            cursor += b
            t0 = time.perf_counter()
            frames = [decode(x, exif_orientation=exif) for x in chunk]
            t1 = time.perf_counter()
            prepared = model.prepare(frames)
            t2 = time.perf_counter()
            if tta is None:  # the task's own outputs and decoding (top-k; boxes and NMS for a detector)
                outputs = model.infer(prepared)
                t3 = time.perf_counter()
                model.finish(prepared, outputs)
            else:  # the mirrored view beside each image, merged by the task's TTA rule
                batch = prepared.batch
                raw = model.run(np.concatenate([batch, batch[..., ::-1]]))
                t3 = time.perf_counter()
                model.task.tta(model.spec, raw.reshape(2, b, *raw.shape[1:]), merge="probabilities", top_k=5)
            t4 = time.perf_counter()
            if i < warmup:
                continue
            samples.append((t4 - t0) * 1e3)
            for name, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[name].append(dt * 1e3)
            done += 1
            if progress is not None:
                progress(done, total_calls)
        ms = np.asarray(samples)
        results.append(BatchResult(b, _percentiles(ms), float(b * 1e3 / ms.mean()),
                                   {k: float(np.mean(v)) for k, v in stages.items()}, tuple(samples)))
    tta_effect = None
    if tta is not None:
        frames = [decode(x, exif_orientation=exif) for x in encoded]
        plain = np.stack([p.scores for p in model.predict_batch(frames, tta=None)])
        merged = np.stack([p.scores for p in model.predict_batch(frames, tta=tta)])
        tta_effect = {"mode": tta, "mean_abs_score_change": float(np.abs(plain - merged).mean()),
                      "max_abs_score_change": float(np.abs(plain - merged).max()),
                      "top1_changed": float(np.mean(plain.argmax(1) != merged.argmax(1)))}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    if sys.platform == "darwin":
        peak /= 1024.0  # bytes on macOS
    cold = cold_start(model_path, encoded[0], device=device, engine=engine) if measure_cold_start else None
    return BenchResult(
        model=str(model_path), device=str(device), preprocess=model.preprocessor.mode,
        environment=environment(model.session, model.requested_providers, threads),
        images={"count": len(encoded), "source": source, "skipped": skipped,
                "mean_width": float(np.mean([s[1] for s in shapes])),
                "mean_height": float(np.mean([s[0] for s in shapes]))},
        runs=runs, warmup=warmup, batches=tuple(results), peak_rss_mb=float(peak), cold_start_s=cold, tta=tta_effect)
