"""Engines side by side: ONNX Runtime's CPU EP, OpenVINO (its own API, reading the same .onnx), ncnn (pnnx's files
from the same .onnx) and LiteRT (XNNPACK, onnx2tf's .tflite from the same .onnx), BGR frames end to end.

Models: torchvision ResNet-18, MobileNetV2 and MobileNetV3-Small (random weights with batch norm statistics
measured on real photos: left at their defaults, activations sink into denormal floats, which x86 runs many
times slower; exported by converters.export with the ImageNet transform), the shapes YOLO11n detector trained here (Ultralytics'
own ONNX export at 640x640) and the LR-ASPP segmenter trained here. One decoded 1920x1080 BGR frame per model; each
call is edgeinfer's whole frame: preprocess, the engine's run, decode (NMS and boxes in the frame for the
detector, the class map at the frame's size for the segmenter).

Contenders per model: each engine at 1 and at 2 threads, all loaded at once (ncnn and LiteRT where convert makes
their files: ncnn not for the segmenter, whose run-time resize pnnx cannot lower; LiteRT's converter runs in the
Python $EDGEINFER_LITERT_PYTHON names, default .venv-litert/bin/python). Each round runs every contender once
in a shuffled order, so machine noise hits all alike; figures are medians over rounds, ratios the median of the
per-round ratios. ONNX Runtime and ncnn run without thread spinning (a pool spinning after its run would burn the
cores the next contender needs). Each model's outputs are compared with the task's gate (edgeinfer.tasks.gates) first.
Section "after_tune" (key ``after_tune``): tune on every engine, then engine="auto" side by side with each engine
alone.

Section "ultralytics" (engines.json's key ``detector_vs_ultralytics``): the same detector's frame end to end (a BGR
frame straight from cv2.imread of a real photo with shapes drawn on it -> boxes in frame pixels) through
Ultralytics' own predictor on the same .onnx (``YOLO(file).predict``), through Ultralytics' predictor on its own
OpenVINO export of the same weights (``format="openvino"``, made from the .pt at run time, offline) and through
edgeinfer on every engine of the engine table installed here (converted first where the engine runs only its own
files), at 1 and 2 threads, all in the same shuffled rounds (side_by_side). Ultralytics' sessions get the thread
count the same way edgeinfer's do (its ONNX Runtime session remade with the count and without spinning, its
OpenVINO model recompiled with INFERENCE_NUM_THREADS and otherwise its own settings); OpenCV's and torch's
process-wide pools keep their defaults for both sides (torch's is one thread here: at two, on this loaded 2-core
machine, Ultralytics' torch pre- and post-processing took 4-5x longer, which is no figure of Ultralytics' own
setup). Boxes are compared first (within 0.5 px,
same counts, on all four test frames); stages (pre / graph / post) come from edgeinfer's prepare / infer / finish
and from Ultralytics' own per-image speed.

Writes engines.json (a section not run keeps its figures from the file).

    .venv/bin/python benchmarks/engines.py [--rounds 15] [--models resnet18,detector] [--sections graphs,ultralytics]
"""

from __future__ import annotations

import argparse
import json
import os
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
os.environ.setdefault("YOLO_VERBOSE", "False")  # its load and export logs would bury the figures
# the trained detector and segmenter committed with the tests (training them again takes long on a CPU)
os.environ.setdefault("EDGEINFER_CACHE", str(ROOT / "tests" / "data" / "detectors"))
os.environ.setdefault("EDGEINFER_LITERT_PYTHON", str(ROOT / ".venv-litert" / "bin" / "python"))

from benchmarks import side_by_side  # noqa: E402
from edgeinfer.tools.bench import cpu_model  # noqa: E402

NO_SPIN = {"onnxruntime": {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"},
           "openvino": None, "ncnn": {"openmp_blocktime": "0"}, "litert": None}
MODELS = ("mobilenet_v3_small", "mobilenet_v2", "resnet18", "detector", "segmenter")
ENGINES = ("onnxruntime", "openvino", "ncnn", "litert")
LABELS = {"onnxruntime": "ORT", "openvino": "OpenVINO", "ncnn": "ncnn", "litert": "LiteRT"}
THREADS = (1, 2)
SECTIONS = ("graphs", "ultralytics", "after_tune")
BOX_TOLERANCE_PX = 0.5  # the detector gate's (edgeinfer.tasks.gates)
GOALS = {"best_engine_over_ultralytics_onnx": 1.5, "openvino_over_ultralytics_openvino": 1.0}  # issue 26


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


def _timed(model, frame: np.ndarray):
    """A contender for side_by_side.run: one frame end to end (its results are not stage figures)."""
    def call(_: int) -> None:
        _call(model, frame)
    return call


def measure(name: str, rounds: int, tmp: Path) -> dict:
    import edgeinfer
    from converters.engines import EngineUnsupported, convert, samples
    from edgeinfer.engines import entry

    path, frame = _model_file(name, tmp)
    engines, notes = list(ENGINES), []
    for engine in [e for e in ENGINES if entry(e).needs_artifact]:
        try:
            convert(path, engine=engine, images=[frame])
        except EngineUnsupported as exc:
            engines.remove(engine)
            notes.append(f"{engine}: {exc}")
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
    times = side_by_side.run({k: _timed(m, frame) for k, m in contenders.items()}, rounds).ms
    med = {k: statistics.median(v) for k, v in times.items()}
    # ONNX Runtime's time over each engine's, within each round (> 1: the engine is faster)
    speedup = {f"{e}/{t}": statistics.median(a / b for a, b in zip(times[f"onnxruntime/{t}"], times[f"{e}/{t}"]))
               for e in engines[1:] for t in THREADS}
    return {"model": name, "task": ref.spec.task, "input": list(ref.spec.input.shape),
            "median_ms": med, "p90_ms": {k: float(np.percentile(v, 90)) for k, v in times.items()},
            "ort_over_engine": speedup, "gates": gates, "notes": notes}


def _ultralytics(source: Path, threads: int, frame: np.ndarray):
    """Ultralytics' predictor on ``source`` (the .onnx or its OpenVINO export folder) running at ``threads``."""
    from ultralytics import YOLO

    yolo = YOLO(str(source), task="detect")
    yolo.predict(frame, verbose=False)  # builds the predictor and its backend
    backend = yolo.predictor.model.backend
    if hasattr(backend, "session"):  # its ONNX Runtime session, remade as edgeinfer's: the count, no spinning
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        for key, value in NO_SPIN["onnxruntime"].items():
            opts.add_session_config_entry(key, value)
        backend.session = ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
    else:  # its OpenVINO model, recompiled with its own config plus the count (its precision stays its choice)
        import openvino as ov

        xml = next(Path(source).glob("*.xml"))
        backend.ov_compiled_model = backend.compile_model(
            ov.Core().read_model(str(xml)), config={"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
    return yolo


def _precision(yolo) -> str:
    """The precision Ultralytics' backend computes in: OpenVINO's choice for its compiled model, else f32."""
    compiled = getattr(yolo.predictor.model.backend, "ov_compiled_model", None)
    return compiled.get_property("INFERENCE_PRECISION_HINT").to_string() if compiled is not None else "f32"


def _ours_call(model, frame: np.ndarray):
    def call(_: int) -> dict[str, float]:
        t0 = time.perf_counter()
        prepared = model.prepare([frame])
        t1 = time.perf_counter()
        outputs = model.infer(prepared)
        t2 = time.perf_counter()
        model.finish(prepared, outputs)
        return {"pre": (t1 - t0) * 1e3, "graph": (t2 - t1) * 1e3, "post": (time.perf_counter() - t2) * 1e3}
    return call


def _theirs_call(yolo, frame: np.ndarray):
    def call(_: int) -> dict[str, float]:
        speed = yolo.predict(frame, verbose=False)[0].speed  # Ultralytics' own per-image stage times
        return {"pre": speed["preprocess"], "graph": speed["inference"], "post": speed["postprocess"]}
    return call


def _boxes(contender, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(contender, "predictor"):
        b = contender.predict(frame, verbose=False)[0].boxes
        return b.xyxy.numpy(), b.cls.numpy()
    d = contender.predict(frame)
    return d.xyxy, d.class_id


def detector_vs_ultralytics(rounds: int, tmp: Path) -> dict:
    """The detector frame end to end: edgeinfer on each engine beside Ultralytics' predictor (ONNX, OpenVINO)."""
    import edgeinfer
    from converters.engines import convert
    from edgeinfer import engines as table
    from edgeinfer.errors import EdgeInferError
    from tests.material import shapes
    from ultralytics import YOLO, __version__ as ultralytics_version

    folder = tmp / "vs-ultralytics"
    weights = shapes.train("detect")
    onnx = shapes.export(weights, folder, imgsz=640, variants=["raw"])["raw"]
    pt = folder / weights.name  # the exporter writes beside its weights: a copy, so the cache stays untouched
    pt.write_bytes(weights.read_bytes())
    openvino_dir = Path(YOLO(str(pt)).export(format="openvino", imgsz=640, device="cpu", verbose=False))
    frames = {}
    for name, f in shapes.test_frames("detect").items():  # held-out real photos with shapes drawn on them
        cv2.imwrite(str(folder / f"{name}.png"), f.image)
        frames[name] = cv2.imread(str(folder / f"{name}.png"))
    frame = frames["1080p"]

    notes, ours, theirs, precision = [], {}, {}, {}
    for engine in table.names():
        if not table.installed(engine):
            notes.append(f"{engine}: not installed ({table.entry(engine).install})")
            continue
        if table.entry(engine).needs_artifact:
            try:
                convert(onnx, engine=engine, images=list(frames.values()))
            except EdgeInferError as exc:
                notes.append(f"{engine}: {exc}")
                continue
        for t in THREADS:
            ours[f"edgeinfer {engine}/{t}"] = edgeinfer.load(onnx, engine=engine, threads=t,
                                                            session_config=NO_SPIN.get(engine))
            precision[f"edgeinfer {engine}/{t}"] = "f32"
    for t in THREADS:
        theirs[f"Ultralytics onnx/{t}"] = _ultralytics(onnx, t, frame)
        theirs[f"Ultralytics openvino/{t}"] = _ultralytics(openvino_dir, t, frame)
        precision[f"Ultralytics onnx/{t}"] = "f32"
        precision[f"Ultralytics openvino/{t}"] = _precision(theirs[f"Ultralytics openvino/{t}"])
    their_ov = precision["Ultralytics openvino/1"]
    if their_ov != "f32" and "edgeinfer openvino/1" in ours:
        # Ultralytics leaves OpenVINO's CPU plugin its default precision, bf16 where the CPU has it (AMX here);
        # edgeinfer compiles f32, the graph it verified. The same precision as Ultralytics', for a like-for-like time
        for t in THREADS:
            ours[f"edgeinfer openvino {their_ov}/{t}"] = edgeinfer.load(
                onnx, engine="openvino", threads=t, session_config={"INFERENCE_PRECISION_HINT": their_ov})
            precision[f"edgeinfer openvino {their_ov}/{t}"] = their_ov
    # boxes first: each contender against Ultralytics' predictor on the same graph at the same precision
    boxes = {}
    every = ours | theirs
    for key in every:
        t = key.split("/")[1]
        # Ultralytics' own OpenVINO against its ONNX too: what its precision choice costs in boxes
        ref = f"Ultralytics openvino/{t}" if key in ours and precision[key] != "f32" else f"Ultralytics onnx/{t}"
        if key == ref:
            continue
        deltas = {n: side_by_side.boxes_delta(*_boxes(every[key], f), *_boxes(every[ref], f))
                  for n, f in frames.items()}
        counts = {n: len(_boxes(every[key], f)[0]) for n, f in frames.items()}
        worst = max(deltas.values())
        boxes[key] = {"reference": ref, "worst_px": worst, "per_frame_px": deltas, "boxes": counts,
                      "within_0_5_px": bool(worst <= BOX_TOLERANCE_PX)}

    contenders = {k: _ours_call(m, frame) for k, m in ours.items()} | {k: _theirs_call(y, frame)
                                                                      for k, y in theirs.items()}
    for call in contenders.values():  # warm-up: first calls allocate and compile
        for _ in range(3):
            call(0)
    load_before = os.getloadavg()
    timed = side_by_side.run(contenders, rounds)
    rows = {k: {**{f"{s}_ms": v for s, v in timed.spread(k).items()}, "stages_ms": timed.stage_medians(k),
                "precision": precision[k]} for k in contenders}
    goals = {}
    for t in THREADS:
        f32 = [k for k in ours if k.endswith(f"/{t}") and precision[k] == "f32"]
        best = min(f32, key=timed.median)
        goals[f"{t} thread{'s' if t > 1 else ''}"] = {
            "best_engine": best,
            "best_engine_over_ultralytics_onnx": timed.ratio(f"Ultralytics onnx/{t}", best),
            "openvino_over_ultralytics_openvino": timed.ratio(f"Ultralytics openvino/{t}", f"edgeinfer openvino/{t}"),
            **({f"openvino_{their_ov}_over_ultralytics_openvino": timed.ratio(
                f"Ultralytics openvino/{t}", f"edgeinfer openvino {their_ov}/{t}")}
               if f"edgeinfer openvino {their_ov}/{t}" in ours else {}),
            "each_over_ultralytics_onnx": {k: timed.ratio(f"Ultralytics onnx/{t}", k)["median"]
                                           for k in contenders if k.endswith(f"/{t}")},
        }
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "ultralytics": ultralytics_version,
            "model": f"{weights.name}: the shapes YOLO11n trained here, Ultralytics' ONNX export at 640x640 and its "
                     "OpenVINO export (fp32 weights) of the same .pt",
            "frame": "1920x1080 BGR from cv2.imread (a held-out real photo with shapes drawn); boxes checked on all "
                     f"four test frames {sorted(frames)}",
            "rounds": rounds, "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "goals": GOALS, "contenders": rows, "boxes": boxes, "ratios": goals, "notes": notes}


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
    times = side_by_side.run({k: _timed(m, frame) for k, m in contenders.items()}, rounds).ms
    med = {k: statistics.median(v) for k, v in times.items()}
    fastest = min((k for k in med if k != "auto"), key=med.__getitem__)
    ratio = statistics.median(a / b for a, b in zip(times[fastest], times["auto"]))
    c = report.chosen
    return {"model": name, "chosen": f"{c.engine}/{c.threads} {c.precision}", "auto_engine": contenders["auto"].engine,
            "median_ms": med, "fastest_alone": fastest, "fastest_over_auto": ratio,
            "tune_rows": [r.to_dict() for r in report.rows], "tune_skipped": list(report.skipped)}


def table(out: dict) -> str:
    """The README's table: median ms per frame at 1 and 2 threads, and ORT's time over each engine's."""
    lines = ["| model | threads | " + " | ".join(f"{LABELS[e]} {out.get(e, '')}".strip() for e in ENGINES) + " | "
             + " | ".join(f"ORT / {LABELS[e]}" for e in ENGINES[1:]) + " |",
             "|---|---|" + "---|" * (2 * len(ENGINES) - 1)]
    for row in out["rows"]:
        m, r = row["median_ms"], row["ort_over_engine"]
        for t in THREADS:
            ms = [f"{m[k]:.1f} ms" if k in m else "–" for k in (f"{e}/{t}" for e in ENGINES)]
            ratios = [f"{r[k]:.2f}×" if k in r else "–" for k in (f"{e}/{t}" for e in ENGINES[1:])]
            lines.append(f"| {row['model']} {'x'.join(map(str, row['input'][2:])) if all(row['input'][2:]) else ''} "
                         f"| {t} | " + " | ".join(ms + ratios) + " |")
    return "\n".join(lines)


def detector_table(section: dict) -> str:
    """The README's detector table: each contender's median ms with its quartiles, stages, and the ratios."""
    lines = ["| contender | threads | precision | median ms (q1–q3) | pre / graph / post ms | Ultralytics ONNX / it "
             "| boxes: worst Δ vs |", "|---|---|---|---|---|---|---|"]
    for key, row in section["contenders"].items():
        name, t = key.split("/")
        st = row["stages_ms"]
        ratio = section["ratios"][f"{t} thread{'s' if int(t) > 1 else ''}"]["each_over_ultralytics_onnx"][key]
        b = section["boxes"].get(key)
        lines.append(f"| {name} | {t} | {row['precision']} | {row['median_ms']:.1f} ({row['q1_ms']:.1f}–"
                     f"{row['q3_ms']:.1f}) | {st['pre']:.1f} / {st['graph']:.1f} / {st['post']:.1f} | {ratio:.2f}× | "
                     + (f"{b['worst_px']:.3f} px, {b['reference'].split('/')[0]}" if b else "–") + " |")
    return "\n".join(lines)


def goals_text(section: dict) -> str:
    """One line per thread count: the goals of issue 26 and the measured within-round ratios (median, quartiles)."""
    out = []
    for threads, g in section["ratios"].items():
        parts = [f"best engine ({g['best_engine'].split('/')[0]}) / Ultralytics ONNX "
                 f"{_r(g['best_engine_over_ultralytics_onnx'])} (goal ≥ {section['goals']['best_engine_over_ultralytics_onnx']}×)",
                 f"edgeinfer OpenVINO f32 / Ultralytics OpenVINO {_r(g['openvino_over_ultralytics_openvino'])} "
                 f"(goal ≥ {section['goals']['openvino_over_ultralytics_openvino']}×)"]
        parts += [f"edgeinfer OpenVINO {k.split('_')[1]} / Ultralytics OpenVINO {_r(v)}" for k, v in g.items()
                  if k.startswith("openvino_") and k != "openvino_over_ultralytics_openvino"]
        out.append(f"{threads}: " + "; ".join(parts))
    return "\n".join(out)


def _r(r: dict) -> str:
    return f"{r['median']:.2f}× ({r['q1']:.2f}–{r['q3']:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sections", default=",".join(SECTIONS), help="graphs: each model per engine; ultralytics: the "
                    "detector end to end beside Ultralytics' predictor; after_tune: tune each model, then "
                    "engine='auto' beside each engine alone")
    ap.add_argument("--out", default=str(Path(__file__).with_name("engines.json")))
    ap.add_argument("--table", help="print the README tables of this engines.json and stop")
    args = ap.parse_args()
    if args.table:
        out = json.loads(Path(args.table).read_text())
        print(table(out))
        if "detector_vs_ultralytics" in out:
            print(detector_table(out["detector_vs_ultralytics"]))
            print(goals_text(out["detector_vs_ultralytics"]))
        return
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"--sections: expected some of {SECTIONS}, found {sorted(unknown)}")
    warnings.simplefilter("ignore")
    import ai_edge_litert
    import ncnn
    import onnxruntime as ort
    import openvino as ov

    path = Path(args.out)
    out = json.loads(path.read_text()) if path.is_file() else {}  # a section not run keeps its figures
    with tempfile.TemporaryDirectory() as d:
        if "graphs" in sections:
            rows = []
            for name in args.models.split(","):
                row = measure(name, args.rounds, Path(d))
                rows.append(row)
                m = row["median_ms"]
                print(f"{name:20s} " + "  ".join(f"{k} {v:7.2f} ms" for k, v in m.items())
                      + "  ORT/engine " + " ".join(f"{k} {v:.2f}x" for k, v in row["ort_over_engine"].items())
                      + "  gates " + " ".join(f"{k} {'passed' if g['passed'] else 'FAILED'}"
                                              for k, g in row["gates"].items()),
                      flush=True)
            out.update({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(),
                        "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "onnxruntime": ort.__version__,
                        "openvino": ov.get_version().split("-")[0], "ncnn": ncnn.__version__,
                        "litert": ai_edge_litert.__version__, "rounds": args.rounds,
                        "frame": "1920x1080 BGR, decoded once; each call: preprocess, run, decode", "rows": rows})
        if "ultralytics" in sections:
            section = detector_vs_ultralytics(args.rounds, Path(d))
            out["detector_vs_ultralytics"] = {"cpu": cpu_model(), "cpus": os.cpu_count(),
                                              "onnxruntime": ort.__version__,
                                              "openvino": ov.get_version().split("-")[0], "ncnn": ncnn.__version__,
                                              "litert": ai_edge_litert.__version__, **section}
            worst = {k: v["worst_px"] for k, v in section["boxes"].items()}
            print("boxes, worst Δ against Ultralytics' predictor on the same graph (px): "
                  + ", ".join(f"{k} {v:.4f} (vs {section['boxes'][k]['reference']})" for k, v in worst.items()))
        if "after_tune" in sections:
            tuned = [after_tune(name, args.rounds, Path(d)) for name in args.models.split(",")]
            for t in tuned:
                print(f"{t['model']:20s} after tune: auto runs {t['chosen']}, {t['median_ms']['auto']:.2f} ms; "
                      f"fastest alone {t['fastest_alone']} {t['median_ms'][t['fastest_alone']]:.2f} ms; "
                      f"fastest/auto {t['fastest_over_auto']:.2f}x", flush=True)
            out["after_tune"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(),
                                 "load_average_at_end": os.getloadavg(), "rounds": args.rounds, "models": tuned}
    path.write_text(json.dumps(out, indent=1) + "\n")
    if "rows" in out:
        print(table(out))
    if "detector_vs_ultralytics" in out:
        print(detector_table(out["detector_vs_ultralytics"]))
        print(goals_text(out["detector_vs_ultralytics"]))


if __name__ == "__main__":
    main()
