"""Pipelined stream vs a plain sequential loop on the same video file, and where the time goes.

A 1280x720 MPEG-4 video (written here with OpenCV from a real photo, panning) through mobilenet_v3_small
(exported here): the plain loop reads, predicts and repeats on one thread; `edgeinfer.tools.stream` overlaps
capture+decode, preprocessing and inference on three threads.

1. Per-stage CPU cost per frame (thread CPU time, so other processes on a shared machine barely move
   it): decode, preprocess, inference (one ORT thread), postprocess.
2. Throughput with the process restricted to 1 core, then to 2 cores (os.sched_setaffinity), each
   loop at 1 and at all ORT threads the cores allow, alternating, best of 3; the ratio compares each
   side's best configuration. Every frame is predicted in both (asserted).
3. Per-thread utilisation inside the stream (busy wall time / elapsed), and the bound the stage costs
   set on N cores: sequential 1 / sum(stages); pipelined 1 / max(capture, preprocess, inference +
   postprocess, sum / N). The 1- and 2-core measurements check that model; its 4-core line is what a
   device with a core per stage would get (this machine has 2).

Writes stream_throughput.json.

    .venv/bin/python benchmarks/stream_throughput.py
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np


def stage_costs(model, video: Path) -> dict[str, float]:
    """Mean CPU ms per frame of each stage, measured on one thread in a sequential pass."""
    from edgeinfer.tasks import classification as postprocess

    st: dict[str, list[float]] = {k: [] for k in ("capture", "preprocess", "inference", "postprocess")}
    for _ in range(2):
        cap = cv2.VideoCapture(str(video))
        while True:
            t = time.thread_time()
            ok, frame = cap.read()
            st["capture"].append(time.thread_time() - t)
            if not ok:
                break
            t = time.thread_time()
            x = model.preprocessor.batch([frame])
            st["preprocess"].append(time.thread_time() - t)
            t = time.thread_time()
            raw = model.run(x)
            st["inference"].append(time.thread_time() - t)
            t = time.thread_time()
            postprocess.predictions(raw, kind=model.spec.output.kind, labels=model.labels, top_k=5)
            st["postprocess"].append(time.thread_time() - t)
    return {k: statistics.mean(v) * 1e3 for k, v in st.items()}


def bound_fps(ms: dict[str, float], cores: int) -> tuple[float, float]:
    """(sequential, pipelined) FPS the stage costs allow on ``cores`` cores."""
    total = sum(ms.values())
    per_thread = (ms["capture"], ms["preprocess"], ms["inference"] + ms["postprocess"])
    return 1e3 / total, 1e3 / max(max(per_thread), total / cores)


def main() -> None:
    import torchvision
    from skimage import data

    import converters
    import edgeinfer
    from converters.zoo import imagenet_eval_transform
    from edgeinfer.tools.bench import cpu_model
    from edgeinfer.tools.stream import StreamStats, stream

    cpus = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "pan.mp4"
        base = cv2.resize(data.astronaut()[..., ::-1], (1600, 900), interpolation=cv2.INTER_CUBIC)
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (1280, 720))
        frames = 300
        for i in range(frames):
            x = int(160 + 150 * np.sin(i / 20))
            writer.write(np.ascontiguousarray(base[90:810, x:x + 1280]))
        writer.release()
        onnx_path = Path(tmp) / "m.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converters.export(torchvision.models.mobilenet_v3_small(weights=None).eval(), onnx_path,
                              transform=imagenet_eval_transform())
        os.sched_setaffinity(0, {cpus[0]})
        costs = stage_costs(edgeinfer.load(onnx_path, threads=1), video)
        runs = {}
        for n_cores in sorted({1, len(cpus)}):
            # threads created from here on (ORT's pool, the stream's) inherit the main thread's affinity
            os.sched_setaffinity(0, set(cpus[:n_cores]))
            results: dict[str, float] = {}
            utilisation: dict[str, float] = {}
            for rep in range(3):
                for n in sorted({1, n_cores}):
                    model = edgeinfer.load(onnx_path, threads=n)
                    cap, t, k = cv2.VideoCapture(str(video)), time.perf_counter(), 0
                    while True:
                        ok, frame = cap.read()
                        if not ok:
                            break
                        model.predict(frame)
                        k += 1
                    cap.release()
                    seq = k / (time.perf_counter() - t)
                    stats = StreamStats()
                    count = sum(1 for _ in stream(model, str(video), stats=stats))
                    assert count == k == frames, (count, k)
                    for key, fps in ((f"sequential_{n}t", seq), (f"stream_{n}t", stats.fps)):
                        results[key] = max(results.get(key, 0.0), fps)
                    if stats.fps >= results[f"stream_{n}t"]:
                        elapsed = (stats.ended - stats.started) * 1e3
                        tm = list(stats.timings)
                        utilisation[f"{n}t"] = {
                            "capture": sum(x.capture_ms for x in tm) / elapsed,
                            "preprocess": sum(x.preprocess_ms for x in tm) / elapsed,
                            "inference+postprocess": sum(x.inference_ms + x.postprocess_ms for x in tm) / elapsed}
            best_seq = max(v for k, v in results.items() if k.startswith("sequential"))
            best_stream = max(v for k, v in results.items() if k.startswith("stream"))
            runs[f"{n_cores}_cores"] = {"fps": results, "best_sequential_fps": best_seq, "best_stream_fps": best_stream,
                                        "ratio": best_stream / best_seq, "stream_thread_utilisation": utilisation,
                                        "bound_fps": dict(zip(("sequential", "pipelined"), bound_fps(costs, n_cores)))}
        os.sched_setaffinity(0, set(cpus))
    bounds = {n: dict(zip(("sequential", "pipelined"), bound_fps(costs, n))) for n in (1, 2, 3, 4)}
    main_run = runs[f"{len(cpus)}_cores"]
    out = {"date": time.strftime("%Y-%m-%d"), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "frames": frames,
           "video": "1280x720 mp4v, 300 frames", "model": "mobilenet_v3_small", "opencv": cv2.__version__,
           "stage_cpu_ms_per_frame": costs, "runs": runs, "bounds_by_cores": bounds,
           "fps": main_run["fps"], "best_sequential_fps": main_run["best_sequential_fps"],
           "best_stream_fps": main_run["best_stream_fps"], "ratio": main_run["ratio"]}
    Path(__file__).with_name("stream_throughput.json").write_text(json.dumps(out, indent=2) + "\n")
    print("CPU ms per frame: " + ", ".join(f"{k} {v:.3f}" for k, v in costs.items()) + f" (sum {sum(costs.values()):.3f})")
    for name, r in runs.items():
        print(f"\n{name.replace('_', ' ')} (sched_setaffinity):")
        for k, v in r["fps"].items():
            print(f"  {k:16s} {v:7.1f} FPS")
        print(f"  pipelined / sequential (best vs best): {r['ratio']:.2f}x; the stage costs bound it at "
              f"{r['bound_fps']['pipelined'] / r['bound_fps']['sequential']:.2f}x")
        for n, u in r["stream_thread_utilisation"].items():
            print(f"  stream thread busy ({n}): " + ", ".join(f"{k} {v:.0%}" for k, v in u.items()))
    print("\nbound from the stage costs: cores  sequential FPS  pipelined FPS  ratio")
    for n, b in bounds.items():
        print(f"{n:38d} {b['sequential']:14.1f} {b['pipelined']:14.1f} {b['pipelined'] / b['sequential']:6.2f}x")


if __name__ == "__main__":
    main()
