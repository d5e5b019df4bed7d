"""Engines side by side: ONNX Runtime's CPU EP, OpenVINO (its own API, reading the same .onnx) and ncnn (pnnx's files
from the same .onnx), BGR frames end to end.

Models: torchvision ResNet-18, MobileNetV2 and MobileNetV3-Small (random weights with batch norm statistics
measured on real photos: left at their defaults, activations sink into denormal floats, which x86 runs many
times slower; exported by converters.export with the ImageNet transform), the shapes YOLO11n detector trained here (Ultralytics'
own ONNX export at 640x640) and the LR-ASPP segmenter trained here. One decoded 1920x1080 BGR frame per model; each
call is edgeinfer's whole frame: preprocess, the engine's run, decode (NMS and boxes in the frame for the
detector, the class map at the frame's size for the segmenter).

Contenders per model: each engine at 1 and at 2 threads, all loaded at once (ncnn where convert makes its files:
not for the segmenter, whose run-time resize pnnx cannot lower). Each round runs every contender once
in a shuffled order, so machine noise hits all alike; figures are medians over rounds, ratios the median of the
per-round ratios. ONNX Runtime and ncnn run without thread spinning (a pool spinning after its run would burn the
cores the next contender needs). Each model's outputs are compared with the task's gate (edgeinfer.tasks.gates) first.
``after_tune`` (``--after-tune``): tune on every engine, then engine="auto" side by side with each engine alone.
Writes engines.json.

    .venv/bin/python benchmarks/engines.py [--rounds 15] [--models resnet18,detector]
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
import warnings
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")
# the trained detector and segmenter committed with the tests (training them again takes long on a CPU)
os.environ.setdefault("EDGEINFER_CACHE", str(ROOT / "tests" / "data" / "detectors"))

from edgeinfer.tools.bench import cpu_model  # noqa: E402

NO_SPIN = {"onnxruntime": {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"},
           "openvino": None, "ncnn": {"openmp_blocktime": "0"}}
MODELS = ("mobilenet_v3_small", "mobilenet_v2", "resnet18", "detector", "segmenter")
ENGINES = ("onnxruntime", "openvino", "ncnn")
THREADS = (1, 2)


def _frame() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(cv2.resize(data.astronaut(), (1920, 1080), interpolation=cv2.INTER_CUBIC)[..., ::-1])


def _model_file(name: str, tmp: Path) -> tuple[Path, np.ndarray]:
    """(ONNX path, the 1080p BGR frame it is timed on)."""
    if name == "detector":
        from tests.material import shapes

        # trained at 320; exported at 640, the size YOLO11n is usually run and compared at
        path = shapes.export(shapes.train("detect"), tmp / "det", imgsz=640, variants=["raw"])["raw"]
        frame = next(iter(shapes.test_frames("detect").values())).image
        return path, np.ascontiguousarray(cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_AREA))
    import converters

    if name == "segmenter":
        from tests.material import semseg

        path = tmp / "lraspp.onnx"
        converters.export_segmenter(semseg.train(progress=False), path, transform=semseg.transform(),
                                    labels=semseg.LABELS)
        return path, _frame()
    import torch
    import torchvision
    from PIL import Image
    from skimage import data

    from converters.zoo import imagenet_eval_transform

    net = torchvision.models.get_model(name, weights=None)
    # Random weights leave batch norm's running statistics at their defaults: activations shrink layer by layer
    # into denormal floats, which x86 computes many times slower (MobileNetV3's logits were ~1e-9). Statistics
    # measured on real photos give activations of a trained network's scale, so the timing is a trained model's.
    tf = imagenet_eval_transform()
    photos = torch.stack([tf(Image.fromarray(im)) for im in (data.astronaut(), data.coffee(), data.chelsea(),
                                                               data.rocket())])
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batches
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(photos)
    path = tmp / f"{name}.onnx"
    converters.export(net.eval(), path, transform=tf)
    return path, _frame()


def _call(model, frame: np.ndarray):
    return model.results([frame])


def measure(name: str, rounds: int, tmp: Path) -> dict:
    import edgeinfer
    from converters.engines import EngineUnsupported, convert, samples

    path, frame = _model_file(name, tmp)
    engines, notes = list(ENGINES), []
    try:
        convert(path, engine="ncnn", images=[frame])
    except EngineUnsupported as exc:
        engines.remove("ncnn")
        notes.append(f"ncnn: {exc}")
    contenders = {}
    for engine in engines:
        for t in THREADS:
            contenders[f"{engine}/{t}"] = edgeinfer.load(path, engine=engine, threads=t,
                                                         session_config=NO_SPIN[engine])
    ref = contenders["onnxruntime/2"]
    gates = {}
    for engine in engines[1:]:
        v = ref.task.gate(samples(ref, [frame]), samples(contenders[f"{engine}/2"], [frame]))
        gates[engine] = {"passed": bool(v.passed), **v.figures}
    for m in contenders.values():  # warm-up: first calls allocate and compile
        for _ in range(3):
            _call(m, frame)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    order = list(contenders)
    for _ in range(rounds):
        random.shuffle(order)
        for key in order:
            t0 = time.perf_counter()
            _call(contenders[key], frame)
            times[key].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    # ONNX Runtime's time over each engine's, within each round (> 1: the engine is faster)
    speedup = {f"{e}/{t}": statistics.median(a / b for a, b in zip(times[f"onnxruntime/{t}"], times[f"{e}/{t}"]))
               for e in engines[1:] for t in THREADS}
    return {"model": name, "task": ref.spec.task, "input": list(ref.spec.input.shape),
            "median_ms": med, "p90_ms": {k: float(np.percentile(v, 90)) for k, v in times.items()},
            "ort_over_engine": speedup, "gates": gates, "notes": notes}


def after_tune(name: str, rounds: int, tmp: Path) -> dict:
    """The issue's goal "after tune, engine="auto" is >= 0.95x the fastest engine alone": tune over every engine
    here (at 1 and 2 threads, its default precisions, judged by the task's gate), then auto side by side with each
    engine alone; the ratio is the median over rounds of the fastest one's time over auto's (1.0: as fast)."""
    import edgeinfer
    from converters.engines import EngineUnsupported, convert
    from converters.tune import tune

    folder = tmp / "after_tune"
    folder.mkdir(exist_ok=True)
    path, frame = _model_file(name, folder)
    for engine in ENGINES:  # the files of an engine that needs them beside the model, so it can also run alone
        if edgeinfer.engines.entry(engine).needs_artifact:
            try:
                convert(path, engine=engine, images=[frame])
            except EngineUnsupported:
                pass  # tune says so in its skipped list
    report = tune(path, device="cpu", engines=ENGINES, images=[frame], threads=THREADS, rounds=rounds)
    contenders = {"auto": edgeinfer.load(path, engine="auto", session_config=NO_SPIN[report.chosen.engine])}
    for row in {(r.engine, r.threads) for r in report.rows}:
        contenders["%s/%d" % row] = edgeinfer.load(path, engine=row[0], threads=row[1], session_config=NO_SPIN[row[0]])
    for m in contenders.values():
        for _ in range(3):
            _call(m, frame)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    order = list(contenders)
    for _ in range(rounds):
        random.shuffle(order)
        for key in order:
            t0 = time.perf_counter()
            _call(contenders[key], frame)
            times[key].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    fastest = min((k for k in med if k != "auto"), key=med.__getitem__)
    ratio = statistics.median(a / b for a, b in zip(times[fastest], times["auto"]))
    c = report.chosen
    return {"model": name, "chosen": f"{c.engine}/{c.threads} {c.precision}", "auto_engine": contenders["auto"].engine,
            "median_ms": med, "fastest_alone": fastest, "fastest_over_auto": ratio,
            "tune_rows": [r.to_dict() for r in report.rows], "tune_skipped": list(report.skipped)}


def table(out: dict) -> str:
    """The README's table: median ms per frame at 1 and 2 threads, and ORT's time over each engine's."""
    lines = [f"| model | threads | ORT {out['onnxruntime']} | OpenVINO {out['openvino']} | ncnn {out['ncnn']} | "
             "ORT / OpenVINO | ORT / ncnn |", "|---|---|---|---|---|---|---|"]
    for row in out["rows"]:
        m, r = row["median_ms"], row["ort_over_engine"]
        for t in THREADS:
            ms = [f"{m[k]:.1f} ms" if k in m else "–" for k in (f"{e}/{t}" for e in ENGINES)]
            ratios = [f"{r[k]:.2f}×" if k in r else "–" for k in (f"{e}/{t}" for e in ENGINES[1:])]
            lines.append(f"| {row['model']} {'x'.join(map(str, row['input'][2:])) if all(row['input'][2:]) else ''} "
                         f"| {t} | " + " | ".join(ms + ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=str(Path(__file__).with_name("engines.json")))
    ap.add_argument("--table", help="print the README table of this engines.json and stop")
    ap.add_argument("--after-tune", default=",".join(MODELS),
                    help="models to tune and then time engine='auto' against each engine alone ('' for none)")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    warnings.simplefilter("ignore")
    import ncnn
    import onnxruntime as ort
    import openvino as ov

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            row = measure(name, args.rounds, Path(d))
            rows.append(row)
            m = row["median_ms"]
            print(f"{name:20s} " + "  ".join(f"{k} {v:7.2f} ms" for k, v in m.items())
                  + "  ORT/engine " + " ".join(f"{k} {v:.2f}x" for k, v in row["ort_over_engine"].items())
                  + "  gates " + " ".join(f"{k} {'passed' if g['passed'] else 'FAILED'}" for k, g in row["gates"].items()),
                  flush=True)
        tuned = [after_tune(name, args.rounds, Path(d)) for name in args.after_tune.split(",") if name]
        for t in tuned:
            print(f"{t['model']:20s} after tune: auto runs {t['chosen']}, {t['median_ms']['auto']:.2f} ms; fastest "
                  f"alone {t['fastest_alone']} {t['median_ms'][t['fastest_alone']]:.2f} ms; fastest/auto "
                  f"{t['fastest_over_auto']:.2f}x", flush=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(), "cpus": os.cpu_count(),
           "load_average_at_end": os.getloadavg(), "onnxruntime": ort.__version__,
           "openvino": ov.get_version().split("-")[0], "ncnn": ncnn.__version__, "rounds": args.rounds,
           "frame": "1920x1080 BGR, decoded once; each call: preprocess, run, decode", "rows": rows,
           "after_tune": tuned}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(table(out))


if __name__ == "__main__":
    main()
