"""The ``edgeinfer`` command line: each subcommand parses, calls one library function, formats its result."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from edgeinfer import __version__
from edgeinfer.errors import EdgeInferError, SpecError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _spec_source(args: argparse.Namespace) -> Any:
    """The spec source named on the command line: --from SOURCE/--spec SOURCE, or the plain flags."""
    plain = {k: getattr(args, k, None) for k in ("size", "mean", "std", "interpolation", "resize", "crop_pct")}
    plain = {k: v for k, v in plain.items() if v is not None}
    source = getattr(args, "source", None)
    if plain and source:
        raise SpecError("give --from/--spec or the plain flags (--size, --mean, ...), not both.")
    if plain:
        if "size" in plain and len(plain["size"]) in (1, 2):
            plain["size"] = plain["size"][0] if len(plain["size"]) == 1 else plain["size"]
        return plain
    if source is None:
        return None
    if ":" in source and not source.startswith("timm:") and not Path(source).exists():
        from converters.zoo import import_attr  # a transform object: module:attribute, needs torch

        return import_attr(source)
    return source


def _sidecar(args: argparse.Namespace) -> dict[str, Any]:
    return {"spec": _spec_source(args), "labels": getattr(args, "labels", None),
            "output_kind": getattr(args, "output_kind", None), "hf_backend": getattr(args, "hf_backend", None),
            "imgsz": _imgsz(args)}


def _imgsz(args: argparse.Namespace) -> int | list[int] | None:
    v = getattr(args, "imgsz", None)
    return None if v is None else v[0] if len(v) == 1 else v


def cmd_attach(args: argparse.Namespace) -> int:
    from converters.attach import attach_spec

    side = _sidecar(args)
    if side["spec"] is None:
        raise SpecError("attach: expected --from SOURCE or --size (with --mean/--std/--interpolation).")
    if side.pop("imgsz") is not None:
        raise SpecError("attach: --imgsz is a run option; pass it where the model runs (predict, camera, serve, "
                        "or edgeinfer.load(path, imgsz=...)).")
    spec = attach_spec(args.model, args.output, side.pop("spec"), **side)
    if args.json:
        _print_json({"path": args.output, "spec": spec.to_dict()})
        return 0
    print(f"wrote {args.output}")
    print(spec.describe())
    print(f"output: {spec.output.name} ({spec.output.kind}); labels: {len(spec.labels) if spec.labels else 'none'}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgeinfer.model import load

    model = load(args.model, engine=args.engine, device=args.device, **_sidecar(args))
    if args.json:
        _print_json(model.to_dict())
        return 0
    spec = model.spec
    print(f"model:      {model.path}")
    print(f"schema:     {spec.schema}    task: {spec.task}")
    for i in model.session.get_inputs():
        print(f"input:      {i.name} {i.shape} {i.type}")
    for o in model.session.get_outputs():
        print(f"output:     {o.name} {o.shape} {o.type}" + (f"  ({spec.output.kind})" if o.name == spec.output.name else ""))
    labels = spec.labels or ()
    shown = ", ".join(labels[:10]) + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")
    print(f"labels:     {shown if labels else '(none: class indices are shown)'}")
    print(f"engine:     {model.engine} {model.engine_version}"
          + (f" (artifact {model.session.artifact.get('files')})" if model.session.artifact else ""))
    print(f"providers:  {list(model.providers)}")
    print("pipeline:")
    for line in spec.describe().splitlines():
        print(f"  {line}")
    print("provenance:")
    for k, v in spec.provenance.items():
        if k != "transform":
            print(f"  {k}: {v}")
    if "transform" in spec.provenance:
        print(f"  transform: {spec.provenance['transform']}")
    print(f"self-test:  {'present' if spec.self_test else 'absent'}")
    return 0


def _expand(paths: Sequence[str]) -> list[Path]:
    from edgeinfer.pipeline.images import image_files

    out: list[Path] = []
    for p in map(Path, paths):
        out += image_files(p) if p.is_dir() else [p]
    return out


def _done_images(path: Path) -> set[str]:
    """Images already written to a results file by an earlier (possibly interrupted) run."""
    import csv

    if not path.exists():
        return set()
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return {row["image"] for row in csv.DictReader(f) if row.get("image")}
    done = set()
    for line in path.read_text().splitlines():
        try:
            done.add(json.loads(line)["image"])
        except (ValueError, KeyError):
            continue  # a line cut by an interruption is redone
    return done


def _predict_to_file(model, files: list[Path], args: argparse.Namespace) -> int:
    """Walk files in batches, append results as they come, skip what an earlier run wrote.

    JSONL: one line per image (``{"image": ..., **result.to_dict()}``). CSV: the task's rows, one per
    row of the result (a box, for a detector), each with the image; an image without any gets one row
    with the image alone, so a rerun knows it is done.
    """
    import csv

    from edgeinfer import tasks

    task = tasks.get(model.spec.task)
    out = Path(args.out)
    masks = Path(args.masks) if getattr(args, "masks", None) else None
    if masks is not None and task.mask is None:
        raise SpecError(f"--masks: a {model.spec.task} model gives no masks; drop --masks.")
    # masks mirror the inputs' folders below the deepest folder they share
    root = Path(os.path.commonpath([str(f.parent.resolve()) for f in files])) if masks is not None and files else None
    if out.exists():
        data = out.read_bytes()
        if data and not data.endswith(b"\n"):  # a line cut by an interruption: drop it, it is redone
            with out.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
    done = _done_images(out)
    todo = [f for f in files if str(f) not in done]
    update, close = _progress_bar(len(todo), "predict", unit="image")
    failed = 0
    new_csv = out.suffix == ".csv" and not out.exists()
    # A dynamic-size detector letterboxes a lone image to its own minimal rectangle: one image a call, as
    # its predictor walks a folder; stacking mixed sizes would force the full square.
    step = 1 if model.spec.input.dynamic_size else args.batch
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, ["image", *task.columns], extrasaction="ignore") if out.suffix == ".csv" else None
        if writer is not None and new_csv:
            writer.writeheader()
        try:
            for start in range(0, len(todo), step):
                chunk = todo[start:start + step]
                frames, ok_files = _read_all(model, chunk)
                failed += len(chunk) - len(ok_files)
                if frames:
                    for f, result in zip(ok_files, model.predict_batch(frames, top_k=args.top_k)):
                        if masks is not None:
                            _write_mask(task, result, masks / f.resolve().relative_to(root).with_suffix(".png"))
                        if writer is not None:
                            for row in task.rows(result) or [{}]:
                                writer.writerow({"image": str(f), **{k: _cell(v) for k, v in row.items()}})
                        else:
                            fh.write(json.dumps({"image": str(f), **result.to_dict()}) + "\n")
                    fh.flush()
                for _ in chunk:
                    update(0, 0)
        finally:
            close()
    print(f"{len(todo) - failed} predicted, {len(done)} already in {out}, {failed} skipped as unreadable",
          file=sys.stderr)
    return 0


def _read_all(model: Any, files: Sequence[Path]) -> tuple[list[Any], list[Path]]:
    """The decoded frames of ``files`` as the spec's loader reads them, and the files they came from; an
    unreadable file is reported on stderr and left out."""
    from edgeinfer.pipeline.images import loader_options, read

    frames, ok = [], []
    for f in files:
        try:
            frames.append(read(f, **loader_options(model.spec.decode)))
            ok.append(f)
        except EdgeInferError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
    return frames, ok


def _write_mask(task: Any, result: Any, path: Path) -> None:
    """The result's mask image (a class map, or an instance-id map) as a lossless PNG, written atomically."""
    from edgeinfer.tasks.segmentation import save_label_png

    path.parent.mkdir(parents=True, exist_ok=True)
    save_label_png(task.mask(result), path)


def _cell(value: Any) -> Any:
    """A CSV cell: floats with 6 decimals, lists as JSON."""
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def _predict_on_ray(args: argparse.Namespace) -> int:
    """``--on ray``: the folder on a Ray cluster (edgeinfer.tools.distributed), optionally against training."""
    from edgeinfer.tools import distributed

    if not args.out:
        raise SpecError("--on ray writes its results to a file: add --out results.parquet (or .jsonl).")
    reference = None
    if args.reference:
        from converters.compare import TorchReference  # the workstation side: torch on the workers

        reference = TorchReference(args.reference, weights=args.weights, num_classes=args.num_classes,
                                   transform=args.transform)
    update, close = _progress_bar(0, "predict (ray)", unit="image")
    seen = [0]

    def progress(done: int, total: int) -> None:
        for _ in range(done - seen[0]):
            update(0, 0)
        seen[0] = done

    source = args.images[0] if len(args.images) == 1 else args.images
    try:
        report = distributed.predict(args.model, source, out=args.out, device=args.device, address=args.address,
                                     threads=args.threads, workers=args.workers, batch=args.batch, top_k=args.top_k,
                                     reference=reference, progress=progress, engine=args.engine,
                                     load_options={k: v for k, v in _sidecar(args).items() if v is not None})
    finally:
        close()
    if args.json:
        _print_json(report.to_dict())
        return 0
    print(f"{report.predicted} predicted, {report.failed} failed (recorded with their error), {report.skipped} "
          f"already in {report.out}; {report.workers} workers x {report.threads_per_worker} threads on "
          f"{report.nodes} node(s), {report.cluster_cpus:g} CPUs, on {', '.join(report.engines) or args.engine}; "
          f"{report.seconds:.1f} s ({report.images_per_s:.1f} images/s)", file=sys.stderr)
    if report.reference is not None:
        r = report.reference
        if r["images"]:
            print(f"agreement with {r['reference']} on {r['images']} images: top-1 {r['top1_agreement']:.1%}, "
                  f"max |dp| {r['max_abs_diff']:.2e} (mean of per-image max {r['mean_max_abs_diff']:.2e})")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Vectors of every image, in file order: ``--out vectors.npy`` and ``vectors.files.txt`` beside it."""
    import numpy as np

    from edgeinfer.tasks import embedding
    from edgeinfer.model import load

    model = load(args.model, engine=args.engine, device=args.device, imgsz=_imgsz(args))
    if model.task.result is not embedding.Embedding:
        raise SpecError(f"{args.model}: embed needs an embedding model; this model's task is {model.spec.task!r}. "
                        "Use predict.")
    files = _expand(args.images)
    names, vecs, failed = [], [], 0
    update, close = _progress_bar(len(files), "embed", unit="image")
    try:
        for start in range(0, len(files), args.batch):
            chunk = files[start:start + args.batch]
            frames, ok = _read_all(model, chunk)
            failed += len(chunk) - len(ok)
            for _ in chunk:
                update(0, 0)
            if frames:
                vecs += [e.vector for e in model.predict_batch(frames)]
                names += [str(f) for f in ok]
    finally:
        close()
    if not vecs:
        raise SpecError(f"embed: no readable image among {len(files)} file(s); nothing written.")
    embedding.save(args.out, names, np.stack(vecs))
    print(f"{len(names)} vectors of {vecs[0].shape[0]} dimensions in {args.out} (names in "
          f"{embedding.files_path(args.out).name}), {failed} skipped as unreadable", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.engine in ("local", "ray"):  # before the graph engines had the word, --engine said where to run
        import warnings

        warnings.warn(f"predict --engine {args.engine} is now --on {args.engine} (--engine picks the engine that "
                      "runs the graph: onnxruntime, openvino); the old spelling goes away in a later release.",
                      DeprecationWarning, stacklevel=1)
        print(f"warning: --engine {args.engine} is deprecated; use --on {args.engine}", file=sys.stderr)
        args.on, args.engine = args.engine, "onnxruntime"
    if args.on == "ray":
        return _predict_on_ray(args)
    from edgeinfer.model import load

    from edgeinfer import tasks

    model = load(args.model, engine=args.engine, device=args.device, **_sidecar(args))
    task = tasks.get(model.spec.task)
    if args.out:
        return _predict_to_file(model, _expand(args.images), args)
    results = []
    failed = 0
    for path in _expand(args.images):
        try:
            pred = model.predict(path, top_k=args.top_k)
        except EdgeInferError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        results.append({"image": str(path), **pred.to_dict()})
        if not args.json:
            print(f"{path}: {task.summary(pred)}")
    if args.json:
        _print_json(results)
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    import converters
    from converters import zoo

    model, transform = zoo.build(args.arch, num_classes=args.num_classes, weights=args.weights)
    if args.transform:
        transform = zoo.import_attr(args.transform)
    labels = Path(args.labels).read_text().splitlines() if args.labels else None
    images = _expand([args.images]) if args.images else None
    report = converters.export(model, args.output, transform=transform, labels=labels, images=images)
    if args.json:
        _print_json(report.to_dict())
        return 0
    print(f"wrote {report.path}")
    print(report.spec.describe())
    print(f"verified on {report.images} images: export max|dp|={report.export_max_abs_diff:.2e} "
          f"top-1 {report.export_top1_agreement:.0%}; deployed max|dp|={report.deploy_max_abs_diff:.2e} "
          f"top-1 {report.deploy_top1_agreement:.0%}")
    for note in report.warnings:
        print(f"note: {note}")
    return 0


def _progress_bar(total: int, desc: str, unit: str = "call"):
    """A tqdm bar when tqdm is installed, else a silent callback."""
    try:
        from tqdm import tqdm
    except ImportError:
        return (lambda done, total: None), (lambda: None)
    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
    return (lambda done, total: bar.update(1)), bar.close


def cmd_devices(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from edgeinfer.providers import DEVICES_DIR, device_names, read_profile
    from edgeinfer.requirements import versions

    available = set(ort.get_available_providers())
    rows = []
    for name in device_names():
        prof = read_profile(name)
        rows.append({**prof.to_dict(), "available": [p.name for p in prof.providers if p.name in available],
                     "would_run_on": next((p.name for p in prof.providers if p.name in available), None)})
    env = versions()
    if args.json:
        _print_json({"devices_dir": str(DEVICES_DIR), **env, "available_providers": sorted(available),
                     "devices": rows})
        return 0
    print(f"edgeinfer {env['edgeinfer']} on {env['machine']}: numpy {env['numpy']}, OpenCV {env['opencv']} "
          f"({', '.join(env['opencv_distributions']) or env['opencv_module']}), {env['onnxruntime_distribution']}")
    print(f"profiles in {DEVICES_DIR}; this onnxruntime offers {sorted(available)}")
    for r in rows:
        marks = " -> ".join(f"{p['name']}{'' if p['name'] in available else ' (missing)'}" for p in r["providers"])
        print(f"{r['name']:16s} {r['precision']:5s} {r['preprocess']:6s} {marks}")
        print(f"{'':16s} {r['description']}; runs here on {r['would_run_on'] or 'nothing'}")
    return 0


def cmd_camera(args: argparse.Namespace) -> int:
    import os

    import cv2

    from edgeinfer.model import load
    from edgeinfer.tools.stream import StreamStats, annotate, stream

    model = load(args.model, engine=args.engine, device=args.device, imgsz=_imgsz(args))
    source = int(args.source) if args.source.isdigit() else args.source
    stats = StreamStats()
    show = args.show and (bool(os.environ.get("DISPLAY")) or sys.platform in ("win32", "darwin"))
    if args.show and not show:
        print("no display: running headless (use --out to save the annotated video)", file=sys.stderr)
    writer = jsonl = None
    try:
        jsonl = open(args.jsonl, "w") if args.jsonl else None
        for frame, pred, timing in stream(model, source, max_frames=args.max_frames, stats=stats, top_k=args.top_k,
                                          conf=args.conf, inflight=args.inflight):
            if jsonl is not None:
                jsonl.write(json.dumps({"frame": timing.index, **pred.to_dict(), "latency_ms": timing.latency_ms}) + "\n")
            if show or args.out:
                img = annotate(frame, pred, fps=stats.fps, latency_ms=timing.latency_ms)
                if args.out:
                    if writer is None:
                        writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), 25,
                                                 (img.shape[1], img.shape[0]))
                    writer.write(img)
                if show:
                    cv2.imshow("edgeinfer", img)
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        break
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        if writer is not None:
            writer.release()
        if jsonl is not None:
            jsonl.close()
        if show:
            cv2.destroyAllWindows()
    d = stats.to_dict()
    print(f"{d['frames']} frames, {d['fps']:.1f} FPS, {d['dropped']} dropped (stale), {d['reconnects']} reconnects")
    for key in ("capture_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "latency_ms"):
        print(f"  {key:15s} mean {d[key]['mean']:7.2f}  p50 {d[key]['p50']:7.2f}  p90 {d[key]['p90']:7.2f}")
    for err in d["errors"]:
        print(f"  source: {err}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import os

    from edgeinfer.serving import server as serve  # needs the serve extra; says how to install it when missing
    from edgeinfer.model import load

    token = args.token or os.environ.get("EDGEINFER_TOKEN") or None
    limits = serve.Limits(max_bytes=args.max_bytes, max_side=args.max_side, max_files=args.max_files)
    model = load(args.model, engine=args.engine, device=args.device, imgsz=_imgsz(args))
    logging.basicConfig(level=logging.INFO, format="edgeinfer: %(message)s")
    source = int(args.source) if args.source is not None and args.source.isdigit() else args.source
    where = f"http://{args.host}:{args.port}/"
    print(f"serving {model.path} ({model.spec.task}, {model.engine} {model.engine_version}, {model.providers[0]}) on {where}"
          + (f"; live view of {args.source} at {where}" if source is not None else ""), file=sys.stderr)
    try:
        serve.serve(model, host=args.host, port=args.port, source=source, token=token, allow_no_token=args.no_token,
                    limits=limits, top_k=args.top_k, workers=args.workers, log_level=args.log_level,
                    access_log=args.access_log)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once its graceful shutdown is done
        pass
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edgeinfer.tools.bench import bench

    batches = [int(b) for b in args.batch.split(",")]
    update, close = _progress_bar(len(batches) * args.runs, "bench")
    try:
        result = bench(args.model, device=args.device, engine=args.engine, batches=batches, images=args.images, runs=args.runs,
                       warmup=args.warmup, threads=args.threads, preprocess=args.preprocess,
                       measure_cold_start=not args.no_cold_start, progress=update, tta=args.tta)
    finally:
        close()
    if args.json:
        from edgeinfer.tools.files import write_text_atomic

        write_text_atomic(args.json, result.to_json() + "\n")
    if args.plot:
        from edgeinfer.tools.plots import plot_bench

        plot_bench(result, args.plot)
    env = result.environment
    print(f"model: {result.model}   device: {result.device}   preprocess: {result.preprocess}")
    print(f"engine: {env['engine']} {env['engine_version']}; providers: {env['providers_used']} (requested "
          f"{env['providers_requested']}), {env['cpu_model']} x{env['cpu_count']}, threads {env['intra_op_threads'] or 'default'}")
    if env.get("emulated"):
        print(f"EMULATED ({env['emulated']}): these timings are not the device's; they show it runs, not how fast")
    print(f"images: {result.images['count']} ({result.images['source']}, mean {result.images['mean_width']:.0f}x"
          f"{result.images['mean_height']:.0f}); {result.runs} runs after {result.warmup} warm-up")
    print(f"{'batch':>5s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'mean':>8s} {'std':>7s} {'min':>8s} {'max':>8s} "
          f"{'img/s':>8s}  decode / preprocess / inference / postprocess (ms per call)")
    for b in result.batches:
        lat = b.latency_ms
        st = b.stages_ms
        print(f"{b.batch:5d} {lat['p50']:8.2f} {lat['p90']:8.2f} {lat['p99']:8.2f} {lat['mean']:8.2f} {lat['std']:7.2f} "
              f"{lat['min']:8.2f} {lat['max']:8.2f} {b.throughput_ips:8.1f}  {st['decode']:.2f} / {st['preprocess']:.2f}"
              f" / {st['inference']:.2f} / {st['postprocess']:.2f}")
    print(f"peak resident memory: {result.peak_rss_mb:.0f} MB")
    if result.tta:
        t = result.tta
        print(f"tta {t['mode']}: scores moved by {t['mean_abs_score_change']:.2e} on average (max "
              f"{t['max_abs_score_change']:.2e}), top-1 changed on {t['top1_changed']:.0%} of images")
    if result.cold_start_s:
        c = result.cold_start_s
        print(f"cold start: {c['total']:.2f} s (interpreter {c['interpreter']:.2f}, import {c['import']:.2f}, "
              f"load {c['load']:.2f}, first prediction {c['first_prediction']:.2f})")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from converters import zoo
    from converters.compare import compare

    model, transform = zoo.build(args.torch_model, num_classes=args.num_classes, weights=args.weights)
    if args.transform:
        transform = zoo.import_attr(args.transform)
    report = compare(model, transform, args.model, args.images, variants=args.variant or (), progress=True,
                     device=args.device)
    if args.json:
        from edgeinfer.tools.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    print(f"reference: {args.torch_model} on its transform, {report.images} images ({report.output_kind})")
    print(f"{'candidate':32s} {'max|dp|':>10s} {'mean|dp|':>10s} {'max|dout|':>10s} {'top-1':>7s} {'top-5':>7s}")
    for c in report.candidates:
        print(f"{c.name:32s} {c.max_abs_diff:10.2e} {c.mean_abs_diff:10.2e} {c.max_abs_diff_raw:10.2e} "
              f"{c.top1_agreement:7.1%} {c.top5_agreement:7.1%}")
    for c in report.candidates:
        worst = ", ".join(f"{Path(n).name} ({d:.1e})" for n, d in c.worst[:3])
        print(f"worst for {c.name}: {worst}")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from converters.optimize import optimize

    report = optimize(args.model, args.output, kind=args.kind, calibration=args.calibration, holdout=args.holdout,
                      min_agreement=args.min_agreement, force=args.force)
    if args.json:
        _print_json(report.to_dict())
        return 0
    held = "calibration images" if report.holdout_is_calibration else "held-out images"
    print(f"wrote {report.output} ({report.kind}, {report.size_bytes / 1e6:.1f} MB)")
    print(f"agreement with fp32 on {report.images} {held}: top-1 {report.top1_agreement:.1%} "
          f"(gate {report.min_agreement:.0%}), max |dp| {report.max_abs_diff:.2e}, mean |dp| {report.mean_abs_diff:.2e}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from converters.engines import EngineRefused, convert  # the workstation side: the engines' converters

    try:
        report = convert(args.model, engine=args.engine, images=args.images, threads=args.threads,
                         weights=args.weights)
    except EngineRefused as exc:
        if args.json:
            _print_json(exc.report.to_dict())
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(report.to_dict())
        return 0
    p = report.parity
    figures = ", ".join(f"{k} {v:.3g}" for k, v in p.items() if isinstance(v, float))
    print(f"{report.folder}: {report.engine} {report.engine_version} ({', '.join(report.files)}), spec "
          f"{report.spec_sha256[:12]}; equal to ONNX Runtime within the gate on {report.images} image(s): {figures}")
    print(f"use it: edgeinfer.load({report.source!r}, engine={report.engine!r})")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from converters.tune import tune

    tolerances = {}
    for item in args.tolerance or ():
        key, _, value = item.partition("=")
        try:
            tolerances[key] = float(value)
        except ValueError:
            print(f"error: --tolerance expects NAME=NUMBER (e.g. atol=0.02), found {item!r}", file=sys.stderr)
            return 2
    report = tune(args.model, device=args.device, images=args.images, rounds=args.rounds,
                  engines=args.engines.split(",") if args.engines else None, tolerances=tolerances,
                  out_profile=args.out_profile)
    if args.json:
        _print_json(report.to_dict())
        return 0
    print(f"{report.model} on device {report.device!r}, {report.images} images, the {report.task} gate against "
          f"ONNX Runtime fp32" + (f" ({tolerances})" if tolerances else ""))
    if report.emulated:
        print(f"EMULATED ({report.emulated}): the timings below are not the device's; the fastest here need not be "
              "the fastest there. Tune on the device itself.")
    print(f"{'engine':24s} {'precision':9s} {'provider':28s} {'threads':>7s} {'median ms':>10s}  gate")
    for r in report.rows:
        mark = "  <- chosen" if r == report.chosen else ("" if r.passes else "  (fails the gate)")
        figures = ", ".join(f"{k} {v:.3g}" for k, v in r.gate.items() if isinstance(v, float))
        print(f"{r.engine + ' ' + r.engine_version:24s} {r.precision:9s} {r.provider:28s} {r.threads:7d} "
              f"{r.median_ms:10.2f}  {figures}{mark}")
    for s in report.skipped:
        print(f"not measured: {s['engine'] or ''} {s['precision'] or ''}: {s['reason']}")
    if report.choice_path:
        written = [report.choice_path, report.profile_path, report.variant_path, report.artifact_path]
        print("wrote " + ", ".join(w for w in written if w))
        print(f"use it: edgeinfer.load({report.model!r}, engine='auto', device={report.device!r})")
        return 0
    print("no configuration passed the gate; nothing written")
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    model = transform = None
    if args.torch_model or args.reference_transform:
        from converters import zoo

        if args.torch_model:
            model, transform = zoo.build(args.torch_model, num_classes=args.num_classes, weights=args.weights)
        if args.reference_transform:
            transform = zoo.import_attr(args.reference_transform)
    if model is None and transform is None and args.plots is None:
        from edgeinfer.tools.check import check

        report = check(args.model, images=args.images, device=args.device, imgsz=_imgsz(args), engine=args.engine)
    else:  # the training reference or the plots: the workstation side (torch, matplotlib)
        from converters.reference import check

        report = check(args.model, args.images if args.images is not None else [], transform=transform,
                       torch_model=model, plots_dir=args.plots, device=args.device, imgsz=_imgsz(args),
                       engine=args.engine)
    from edgeinfer.tools.files import write_text_atomic

    if args.json:
        write_text_atomic(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    if args.report:
        write_text_atomic(args.report, report.to_markdown())
    if not report.findings:
        print(f"{report.model}: healthy, no findings ({report.measured.get('images', 0)} images checked)")
    for f in report.findings:
        print(f"[{f.severity}] {f.code}: {f.message}\n    fix: {f.fix}")
    return 0 if report.ok else 1


def cmd_fleet(args: argparse.Namespace) -> int:
    from edgeinfer.tools.fleet import report

    result = report(args.reports, out=args.out, plots=args.plots)
    if args.json:
        _print_json(result.to_dict())
        return 0
    if args.out:
        print(f"wrote {args.out}" + (f" (plots in {args.plots})" if args.plots else ""))
    else:
        print(result.to_markdown(), end="")
    for o in result.outliers:
        print(f"outlier: {o.device}, {o.model} ({o.kind}): {o.message}", file=sys.stderr)
    return 0


def _torch_model_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--torch-model", required=required, help="torchvision name, timm:NAME or module:attribute "
                   "of the original model (needs torch)")
    p.add_argument("--weights", help="a state_dict for --torch-model (loaded with weights_only=True)")
    p.add_argument("--num-classes", type=int, default=None)


def _source_args(p: argparse.ArgumentParser, flag: str) -> None:
    g = p.add_argument_group("spec source (for a model without an edgeinfer spec)")
    g.add_argument(flag, dest="source", metavar="SOURCE",
                   help="an edgeinfer spec JSON, a plain {size, mean, std, interpolation} JSON, a Hugging Face "
                        "preprocessor_config.json (or its folder), timm:MODEL_NAME, or module:attribute of a "
                        "torchvision/timm transform (the last two need torch)")
    g.add_argument("--size", type=int, nargs="+", help="model input size: S or H W")
    g.add_argument("--mean", type=float, nargs="+", help="per-channel mean, 0-1 units")
    g.add_argument("--std", type=float, nargs="+", help="per-channel std, 0-1 units")
    g.add_argument("--interpolation", help="bilinear (default), bicubic, nearest, box, hamming, lanczos")
    g.add_argument("--resize", type=int, help="shorter side before the centre crop (torchvision Resize(256))")
    g.add_argument("--crop-pct", type=float, help="timm crop_pct: shorter side to size / crop_pct, then crop")
    g.add_argument("--labels", help="a text file with one label per line")
    g.add_argument("--output-kind", choices=("logits", "probabilities", "multilabel_logits",
                                             "multilabel_probabilities"),
                   help="default: measured on the model (a graph ending in softmax gives probabilities)")
    g.add_argument("--hf-backend", choices=("pil", "torchvision"),
                   help="the resize a Hugging Face processor ran, when its class name does not say")
    _imgsz_arg(p)


def _imgsz_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--imgsz", type=int, nargs="+", metavar="S",
                   help="run a dynamic-input detector at S (or H W), rounded up to its stride, as Ultralytics' "
                        "predict(imgsz=...); a graph fixed at another size is refused")


def _engine_names() -> tuple[str, ...]:
    from edgeinfer import engines

    return engines.names()


def _engine_arg(p: argparse.ArgumentParser, *, legacy: tuple[str, ...] = ()) -> None:
    from edgeinfer import engines

    p.add_argument("--engine", default=engines.DEFAULT, choices=engines.names() + (engines.AUTO,) + legacy,
                   metavar="ENGINE",
                   help=f"what runs the graph: {', '.join(engines.names())} (default {engines.DEFAULT}; others are "
                        f"extras: pip install 'edgeinfer[openvino]'), or {engines.AUTO}: the --device profile's "
                        "engines in order, the first that can run the model here")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeinfer", description="Run PyTorch-trained CNNs on edge devices, "
                                     "with the exact preprocessing they were trained with.")
    parser.add_argument("--version", action="version", version=f"edgeinfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show a model's spec, inputs, outputs, labels and provenance")
    p.add_argument("model")
    p.add_argument("--device", default="cpu")
    _engine_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _source_args(p, "--spec")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("attach", help="write a copy of an ONNX model with a spec from another tool's description")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _source_args(p, "--from")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("embed", help="feature vectors of images (an embedding model) to a .npy file, with the file names")
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True, help="vectors.npy: (N, D) float32; vectors.files.txt beside it, one name a line")
    p.add_argument("--device", default="cpu")
    _engine_arg(p)
    p.add_argument("--batch", type=int, default=16)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("predict", help="classify or detect on images (files or folders)")
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", help="append results to a .csv or .jsonl file as they come; a rerun resumes")
    p.add_argument("--batch", type=int, default=8, help="images per model call with --out")
    p.add_argument("--masks", help="with --out, also write each image's mask as a lossless PNG in this folder "
                                   "(subfolders mirror the inputs): the class map of a semantic segmenter (pixel = "
                                   "class id), the instances of a segment model (pixel = 1 + detection index, 0 none)")
    _engine_arg(p, legacy=("local", "ray"))
    g = p.add_argument_group("distributed (--on ray; needs edgeinfer[ray])")
    g.add_argument("--on", choices=("local", "ray"), default="local",
                   help="where the files are predicted (--engine local|ray is the deprecated spelling); ray: a Ray cluster reads, decodes and predicts the files; results go to --out "
                        "(.parquet or .jsonl), a rerun resumes")
    g.add_argument("--address", help="the Ray cluster's address (default: a local Ray started for the run)")
    g.add_argument("--workers", type=int, default=None, help="actor pool size (default: cluster CPUs / threads)")
    g.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime threads per worker (default: the device profile's, else 1)")
    g.add_argument("--reference", metavar="TORCH_MODEL",
                   help="also compute agreement with the original torch model on the workers (torchvision name, "
                        "timm:NAME or module:attribute; needs torch on the cluster)")
    g.add_argument("--weights", help="a state_dict for --reference")
    g.add_argument("--num-classes", type=int, default=None)
    g.add_argument("--transform", help="module:attribute of the eval transform (default: the architecture's)")
    _source_args(p, "--spec")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("camera", help="run a camera, video file or stream through the model")
    p.add_argument("model")
    p.add_argument("--source", default="0", help="camera index, video file or rtsp:// URL")
    p.add_argument("--show", action="store_true", help="display the annotated frames when a screen exists")
    p.add_argument("--out", help="write the annotated video here (.mp4)")
    p.add_argument("--jsonl", help="write one JSON line per frame here")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--conf", type=float, default=None,
                   help="a detector's confidence threshold (default: the spec's; Ultralytics' 0.25)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--inflight", type=int, default=2,
                   help="frames in the engine at once where it runs asynchronously (openvino): inference overlaps "
                        "capture, preprocessing and drawing; 1 runs one frame at a time (default 2)")
    p.add_argument("--device", default="cpu")
    _imgsz_arg(p)
    _engine_arg(p)
    p.set_defaults(func=cmd_camera)

    p = sub.add_parser("serve", help="an HTTP API for the model; with --source, a live view in the browser "
                       "(needs the serve extra)")
    p.add_argument("model")
    p.add_argument("--device", default="cpu", help="device profile name or .toml path")
    _engine_arg(p)
    p.add_argument("--source", default=None, help="camera index, video file (played in a loop) or rtsp:// URL "
                   "for the live view at / (GET /stream, /events)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=None, help="access token clients must send (Authorization: Bearer, or "
                   "?token= on the page); default: $EDGEINFER_TOKEN. Required beyond loopback")
    p.add_argument("--no-token", action="store_true", help="listen beyond loopback without a token, on purpose")
    p.add_argument("--max-bytes", type=int, default=20 * 1024 * 1024, help="largest request body (bytes)")
    p.add_argument("--max-side", type=int, default=8192, help="largest image side (pixels), read from its header")
    p.add_argument("--max-files", type=int, default=32, help="most images in one POST /predict/batch")
    p.add_argument("--top-k", type=int, default=5, help="default top-k of a classifier (?top_k= per request)")
    p.add_argument("--workers", type=int, default=None, help="predictions run at once (default: min(4, CPUs))")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--access-log", action="store_true", help="log every request")
    _imgsz_arg(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("devices", help="list device profiles and which of their providers this build offers")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("bench", help="latency, throughput, stage split, memory and cold start of a model")
    p.add_argument("model")
    p.add_argument("--device", default="cpu", help="device profile name or .toml path")
    _engine_arg(p)
    p.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,2,4,8")
    p.add_argument("--images", help="a folder of images to decode and predict (default: built-in frames)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--preprocess", choices=("exact", "fast"), default=None, help="default: the device profile's")
    p.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process cold start measurement")
    p.add_argument("--tta", choices=("hflip",), default=None, help="time test-time augmentation, report its effect")
    p.add_argument("--json", help="write the result (schema edgeinfer.bench/1) to this file")
    p.add_argument("--plot", help="write latency/throughput plots to this PNG")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("parity", help="compare the deployed model with the original torch model (needs torch)")
    p.add_argument("model", help="the exported .onnx")
    _torch_model_args(p, required=True)
    p.add_argument("--transform", help="module:attribute of the eval transform (default: the architecture's)")
    p.add_argument("--images", required=True, help="a folder of images")
    p.add_argument("--variant", action="append", help="another .onnx of the same model (fp16, int8, ...)")
    p.add_argument("--device", default="cpu", help="the device profile the deployed candidates run with")
    p.add_argument("--json", help="write the report to this file")
    p.set_defaults(func=cmd_parity)

    for name, kinds, helptext in (("optimize", ("graph", "fp16", "int8"), "write a graph-optimised, fp16 or int8 variant"),
                                  ("quantize", ("int8",), "write an int8 (QDQ, per-channel) variant")):
        p = sub.add_parser(name, help=helptext + " that keeps the spec and passes the agreement gate")
        p.add_argument("model")
        p.add_argument("--kind", choices=kinds, default=kinds[-1] if name == "quantize" else "graph")
        p.add_argument("-o", "--output", default=None, help="default: model.<kind>.onnx beside the model")
        p.add_argument("--calibration", help="a folder of images, fed through the model's own preprocessing")
        p.add_argument("--holdout", help="a folder of images to check agreement on (default: the calibration ones)")
        p.add_argument("--min-agreement", type=float, default=0.99, help="top-1 agreement gate with fp32")
        p.add_argument("--force", action="store_true", help="write the variant even below the gate")
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("convert", help="write another engine's files for the model beside it (OpenVINO IR, "
                       "ncnn param/bin, LiteRT .tflite), "
                       "kept only when equal to ONNX Runtime within the task's gate")
    p.add_argument("model", help="the .onnx with its spec")
    p.add_argument("--engine", required=True, choices=tuple(n for n in _engine_names() if n != "onnxruntime"))
    p.add_argument("--images", help="a folder of images to measure parity on (beside the spec's self-test image)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--weights", choices=("f32", "f16"), default="f32",
                   help="f16: the engine's half-size weights (OpenVINO's default), kept only within the gate")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("tune", help="measure engine x precision x provider x threads here; write the fastest within "
                                    "the task's gate as the choice engine='auto' runs")
    p.add_argument("model")
    p.add_argument("--device", default="cpu", help="device profile to start from")
    p.add_argument("--images", required=True, help="a folder of images (calibration and agreement)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--engines", help="comma-separated engines to try (default: the device profile's)")
    p.add_argument("--tolerance", action="append", metavar="NAME=NUMBER",
                   help="a tolerance for the task's gate, e.g. atol=0.02 (repeatable)")
    p.add_argument("--out-profile", help="where to write the tuned profile (default: beside the model)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("check", help="the deployment doctor: find silent failures, say the fix")
    p.add_argument("model")
    p.add_argument("--images", help="a folder of images")
    p.add_argument("--reference-transform", help="module:attribute of the training eval transform (needs torch)")
    p.add_argument("--device", default="cpu", help="the device profile to load the model with (runtime checks)")
    _torch_model_args(p, required=False)
    p.add_argument("--json", help="write the findings to this JSON file")
    p.add_argument("--report", help="write a markdown report (linking the plots) to this file")
    p.add_argument("--plots", help="write debug plots into this folder (needs matplotlib)")
    _imgsz_arg(p)
    _engine_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("fleet", help="compare the bench, parity, check and tune reports of many devices")
    fleet = p.add_subparsers(dest="fleet_command", required=True)
    p = fleet.add_parser("report", help="one comparison (markdown, plots) from the JSON reports; outliers first")
    p.add_argument("reports", nargs="+", help="JSON files written by bench --json, parity --json, check --json, "
                                              "tune --json")
    p.add_argument("--out", help="write the markdown report here (default: print it)")
    p.add_argument("--plots", help="write latency and agreement plots into this folder (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_fleet)

    p = sub.add_parser("export", help="export a torchvision/timm architecture or your model (needs torch)")
    p.add_argument("arch", help="torchvision name (resnet18), timm:NAME, or module:attribute of your model")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--weights", help="a state_dict file (loaded with weights_only=True)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--transform", help="module:attribute of the eval transform (default: the architecture's)")
    p.add_argument("--labels", help="a text file with one label per line")
    p.add_argument("--images", help="a folder of images to verify the export on")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeInferError as exc:
        print(f"edgeinfer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
