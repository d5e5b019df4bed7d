"""The camera loop with frames in flight in the engine (``stream(..., inflight=2)``, OpenVINO's asynchronous infer
requests) against the same loop one frame at a time (``inflight=1``), and against ONNX Runtime (no asynchronous
API: one frame at a time), on one video file of real frames, side by side in one run.

Video: 40 frames of 1280x720 BGR, MPEG-4 written here with OpenCV: the shapes scenes on held-out real photos
(tests.material.shapes.test_frames), so the detector has boxes to find. Models: the shapes YOLO11n detector trained
here (Ultralytics' ONNX export at 640) and torchvision ResNet-18 and MobileNetV3-Small exported by converters
(random weights, batch norm statistics measured on real photos: benchmarks/engines.py's _model_file, the same files
as the engines table). Both engines at ``--threads`` inference threads (2: this machine's cores; 1 leaves a core
to the other stages), default settings otherwise. Entries already in the JSON (other models, other thread
counts) are kept, each with the time and load it was measured at.

Two consumers of the loop: ``bare`` takes each result and goes on; ``camera`` draws it on the frame and writes
an MPEG-4 file, as ``edgeinfer camera --out`` does (the work a real loop does per frame, which overlapped
inference can hide). Each round runs the three contenders once in a shuffled order over the whole video; figures
are medians over rounds (FPS = frames / wall time of the loop; latency = capture to result, per frame, p50 and
p90 of the round with the median FPS), with the range over rounds as the noise; ratios are the median of the
per-round ratios (a round's contenders ran seconds apart, so machine noise hits them more alike). The overlapped
loop's results are checked equal to the sequential loop's, frame by frame, exactly. Writes stream_async.json.

    .venv/bin/python benchmarks/stream_async.py [--rounds 7] [--models detector,resnet18] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("EDGEINFER_CACHE", str(ROOT / "tests" / "data" / "detectors"))

from edgeinfer.tools.bench import cpu_model  # noqa: E402

FRAMES, SIZE = 40, (1280, 720)
CONTENDERS = {"openvino_sequential": ("openvino", 1), "openvino_overlapped": ("openvino", 2),
              "onnxruntime_sequential": ("onnxruntime", 1)}


def _video(path: Path) -> Path:
    from tests.material import shapes

    frames = shapes.test_frames("detect", sizes={f"f{k}": SIZE for k in range(FRAMES)})
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, SIZE)
    for f in frames.values():
        writer.write(np.ascontiguousarray(f.image))
    writer.release()
    return path


def _same(a, b) -> bool:
    da, db = a.__dict__, b.__dict__
    return da.keys() == db.keys() and all(
        np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in ((da[k], db[k]) for k in da))


def _run(model, video: Path, inflight: int, consumer: str, out: Path) -> tuple[dict, list]:
    from edgeinfer.tools.stream import StreamStats, annotate, stream

    stats, results, writer = StreamStats(), [], None
    for frame, result, timing in stream(model, str(video), inflight=inflight, stats=stats):
        results.append(result)
        if consumer == "camera":
            img = annotate(frame, result, fps=stats.fps, latency_ms=timing.latency_ms)
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 25, img.shape[1::-1])
            writer.write(img)
    if writer is not None:
        writer.release()
    assert stats.frames == FRAMES and not stats.errors, (stats.frames, list(stats.errors))
    lat = [t.latency_ms for t in stats.timings]
    return {"fps": stats.fps, "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p90_ms": float(np.percentile(lat, 90)),
            "inference_ms_mean": statistics.mean(t.inference_ms for t in stats.timings)}, results


def measure(name: str, rounds: int, tmp: Path, video: Path, threads: int) -> dict:
    import edgeinfer
    from engines import _model_file

    path, _ = _model_file(name, tmp)
    models = {k: edgeinfer.load(path, engine=engine, threads=threads) for k, (engine, _) in CONTENDERS.items()}
    out: dict = {}
    for consumer in ("bare", "camera"):
        runs: dict[str, list[dict]] = {k: [] for k in CONTENDERS}
        # a warm-up run of each, whose results give the exactness check
        first = {k: _run(models[k], video, inflight, consumer, tmp / "warm.mp4")[1]
                 for k, (_, inflight) in CONTENDERS.items()}
        identical = all(_same(a, b) for a, b in zip(first["openvino_overlapped"], first["openvino_sequential"]))
        assert identical, f"{name}: the overlapped loop's results differ from the sequential loop's"
        for _ in range(rounds):
            order = list(CONTENDERS)
            random.shuffle(order)
            for k in order:
                runs[k].append(_run(models[k], video, CONTENDERS[k][1], consumer, tmp / "out.mp4")[0])
        summary = {}
        for k, rs in runs.items():
            med = sorted(rs, key=lambda r: r["fps"])[len(rs) // 2]
            summary[k] = {**med, "fps_median": statistics.median(r["fps"] for r in rs),
                          "fps_range": [min(r["fps"] for r in rs), max(r["fps"] for r in rs)]}
        for key, over in (("overlapped_over_sequential", "openvino_sequential"),
                          ("overlapped_over_onnxruntime", "onnxruntime_sequential")):
            ratios = [a["fps"] / b["fps"] for a, b in zip(runs["openvino_overlapped"], runs[over])]
            summary[key] = statistics.median(ratios)
            summary[key + "_per_round"] = ratios
        summary["rounds_fps"] = {k: [r["fps"] for r in rs] for k, rs in runs.items()}
        print(f"{name} {consumer}: " + ", ".join(f"{k} {v['fps_median']:.1f} FPS" for k, v in summary.items()
                                                 if isinstance(v, dict) and "fps_median" in v)
              + f"; overlapped / sequential {summary['overlapped_over_sequential']:.2f}x", flush=True)
        summary["results_identical"] = identical
        out[consumer] = summary
    return out


def table(out: dict) -> str:
    rows = ["| model | consumer | contender | FPS (median; range over rounds) | latency p50 / p90 "
            "| inference_ms mean |",
            "|---|---|---|---|---|---|"]
    for name, per in out["models"].items():
        for consumer, s in ((c, per[c]) for c in ("bare", "camera")):
            for k in CONTENDERS:
                r = s[k]
                rows.append(f"| {name} | {consumer} | {k.replace('_', ' ')} | {r['fps_median']:.1f} "
                            f"({r['fps_range'][0]:.1f}–{r['fps_range'][1]:.1f}) | {r['latency_p50_ms']:.1f} / "
                            f"{r['latency_p90_ms']:.1f} ms | {r['inference_ms_mean']:.1f} ms |")
            rows.append(f"| {name} | {consumer} | overlapped / sequential; / ORT (median of per-round ratios) | "
                        f"{s['overlapped_over_sequential']:.2f}×; {s['overlapped_over_onnxruntime']:.2f}× | | |")
    return "\n".join(rows)


def main() -> None:
    import onnxruntime
    import openvino

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", default="detector,resnet18")
    ap.add_argument("--threads", type=int, default=2, help="each engine's inference threads")
    args = ap.parse_args()
    dest = Path(__file__).with_name("stream_async.json")
    # runs at other thread counts or of other models are kept: each entry records its own time and load
    out = json.loads(dest.read_text()) if dest.is_file() else {"models": {}}
    out.update({"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                "video": f"{SIZE[0]}x{SIZE[1]} mp4v, {FRAMES} frames", "onnxruntime": onnxruntime.__version__,
                "openvino": openvino.get_version().split("-")[0]})
    with tempfile.TemporaryDirectory() as tmp:
        video = _video(Path(tmp) / "shapes.mp4")
        for name in args.models.split(","):
            load_start, when = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M")
            per = measure(name, args.rounds, Path(tmp), video, args.threads)
            out["models"][f"{name}, {args.threads} thread{'s' if args.threads > 1 else ''}"] = {
                **per, "measured": when, "rounds": args.rounds, "loadavg_start": load_start,
                "loadavg_end": os.getloadavg()}
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    for name, per in out["models"].items():
        print(f"{name}: {per['measured']}, load averages {per['loadavg_start']} -> {per['loadavg_end']}")


if __name__ == "__main__":
    main()
