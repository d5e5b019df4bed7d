"""The device pipeline over a folder too large for one machine: batch inference on a Ray cluster.

Each worker of an actor pool loads the model once (``edgeinfer.load``, the device profile's session), reads
and decodes its own files and runs them through ``Model.predict_batch`` -- the code path a device runs. The
driver lists the paths and writes what comes back. Ray is the ``[ray]`` extra and is imported only here,
inside the functions that use it: ``import edgeinfer`` never imports it.

Output: ``.jsonl`` (one line per image: ``{"image", **result.to_dict(), "worker"}``) or ``.parquet`` (the
task's rows, one per row of a result, each with its image; an image without any gets one row with the image
alone). A file that cannot be read or predicted gets a row with its ``error``; the run goes on. Results
stream into ``OUT.parts/`` (each part written whole, then renamed) while the run goes; at the end they are
merged with an earlier ``OUT`` into a new file renamed over it, one part in memory at a time. A rerun -- after an interruption too --
skips every image already in ``OUT`` or its parts. Ray restarts a worker that dies and retries its batches;
an image that comes back twice is kept once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from edgeinfer.errors import DependencyError, EdgeInferError, ImageError, ModelError
from edgeinfer.tools.files import write_text_atomic

FORMATS = (".jsonl", ".parquet")
# Columns every record carries besides the task's own: the file, why it failed (None when it did not), the
# worker (host:pid) that produced it, and the engine (name and version) that ran its graph there.
IMAGE, ERROR, WORKER, ENGINE = "image", "error", "worker", "engine"


@dataclass(frozen=True)
class RunReport:
    """What a distributed run did: counts, the pool it ran on, its wall time and, with a reference, agreement."""

    out: str
    images: int          # files in the source
    predicted: int       # predicted in this run
    failed: int          # recorded with an error in this run
    skipped: int         # already in the output (an earlier run)
    duplicates_dropped: int  # results that came back twice (a retried batch) and were kept once
    workers: int
    threads_per_worker: int
    cluster_cpus: float
    nodes: int
    seconds: float
    reference: dict[str, Any] | None = None
    engines: tuple[str, ...] = ()  # the engines ("name version") the workers of this run ran the graph on


    @property
    def images_per_s(self) -> float:
        done = self.predicted + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "images": self.images, "predicted": self.predicted, "failed": self.failed,
                "skipped": self.skipped, "duplicates_dropped": self.duplicates_dropped, "workers": self.workers,
                "threads_per_worker": self.threads_per_worker, "cluster_cpus": self.cluster_cpus,
                "nodes": self.nodes, "seconds": self.seconds, "images_per_s": self.images_per_s,
                "engines": list(self.engines), "reference": self.reference}


def _cell(value: Any) -> Any:
    """A columnar cell: lists and dicts as JSON text, so one column keeps one type across tasks and rows."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


class _Worker:
    """One actor of the pool: the model loaded once, then batches of paths in, one record per path out."""

    def __init__(self, model_path: str, device: str, threads: int, top_k: int, reference: Any,
                 options: dict[str, Any]) -> None:
        from edgeinfer import tasks
        from edgeinfer.model import load

        self.model = load(model_path, device=device, threads=threads, **options)
        self.engine = f"{self.model.engine} {self.model.engine_version}"
        self.task = tasks.get(self.model.spec.task)
        self.top_k = top_k
        self.reference = reference
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def _predict(self, frames: list[Any]) -> list[Any]:
        # A dynamic-size model letterboxes a lone image to its own rectangle: one image a call, as the CLI does.
        if self.model.spec.input.dynamic_size:
            return [r for f in frames for r in self.model.predict_batch([f], top_k=self.top_k)]
        return self.model.predict_batch(frames, top_k=self.top_k)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from edgeinfer.pipeline.images import loader_options, read

        paths = [str(p) for p in batch[IMAGE]]
        frames: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for p in paths:
            try:
                frames[p] = read(p, **loader_options(self.model.spec.decode))
            except EdgeInferError as exc:
                errors[p] = f"{type(exc).__name__}: {exc}"
        results: dict[str, Any] = {}
        ok = list(frames)
        if ok:
            try:
                results = dict(zip(ok, self._predict([frames[p] for p in ok])))
            except Exception:  # noqa: BLE001 -- one bad frame fails its batch: find it, keep the others
                for p in ok:
                    try:
                        results[p] = self._predict([frames[p]])[0]
                    except Exception as exc:  # noqa: BLE001 -- recorded with the file, the run goes on
                        errors[p] = f"{type(exc).__name__}: {exc}"
        extra: dict[str, dict[str, Any]] = {}
        if self.reference is not None and results:
            good = list(results)
            extra = dict(zip(good, self.reference.compare(self.model, good, [results[p] for p in good])))
        out: dict[str, list[Any]] = {IMAGE: [], ERROR: [], "result": [], "rows": [], WORKER: [], ENGINE: [],
                                     "extra": []}
        for p in paths:
            r = results.get(p)
            out[IMAGE].append(p)
            out[ERROR].append(errors.get(p))
            out["result"].append(json.dumps(r.to_dict()) if r is not None else None)
            out["rows"].append(json.dumps([{k: _cell(v) for k, v in row.items()} for row in self.task.rows(r)])
                               if r is not None else None)
            out[WORKER].append(self.worker)
            out[ENGINE].append(self.engine)
            out["extra"].append(json.dumps(extra.get(p, {})))
        return out


def _text(value: Any) -> str | None:
    """A record's cell back from Ray's columns: every one is text or missing (a missing one may come back NaN)."""
    return value if isinstance(value, str) else None


# -- output files ---------------------------------------------------------------------------------------
def _lines(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSONL line of one record: the image, its result's to_dict() (or its error), the worker."""
    head = {IMAGE: record[IMAGE]}
    body = json.loads(record["result"]) if record["result"] is not None else {ERROR: record[ERROR]}
    return [{**head, **body, **json.loads(record["extra"]), WORKER: record[WORKER], ENGINE: record.get(ENGINE)}]


def _table_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The Parquet rows of one record: the task's rows, each with the image (one row with the image alone
    when the result has none, so a rerun knows the image is done)."""
    rows = json.loads(record["rows"]) if record["rows"] is not None else []
    extra = json.loads(record["extra"])
    return [{IMAGE: record[IMAGE], ERROR: record[ERROR], **row, **extra, WORKER: record[WORKER],
             ENGINE: record.get(ENGINE)}
            for row in rows or [{}]]


def _read_output(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of an output file (only ``columns``, when given); a JSONL line cut by an interruption is
    dropped (its image is redone)."""
    if not path.exists():
        return []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        if columns is not None:
            columns = [c for c in columns if c in pq.read_schema(path).names]
        return pq.read_table(path, columns=columns).to_pylist()
    rows = []
    with path.open() as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if IMAGE in row:
                rows.append(row if columns is None else {k: row.get(k) for k in columns})
    return rows


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _part_files(parts: Path) -> list[Path]:
    """The finished parts, oldest first (a part being written has another name)."""
    return sorted(parts.glob("part-*.jsonl")) if parts.is_dir() else []


def _records(part: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in part.read_text().splitlines() if line]


def _table(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    columns: dict[str, None] = {IMAGE: None, ERROR: None}
    for r in rows:
        columns.update(dict.fromkeys(r))
    return pa.table({c: pa.array([r.get(c) for r in rows]) for c in columns})


def _conform(table: Any, schema: Any) -> Any:
    """``table`` with ``schema``'s columns, in its order and types (a column it lacks: all missing)."""
    import pyarrow as pa

    return pa.Table.from_arrays([table.column(f.name).cast(f.type) if f.name in table.column_names
                                 else pa.nulls(len(table), f.type) for f in schema], schema=schema)


def _finish(out: Path, parts: Sequence[Path]) -> int:
    """Write the earlier output and then each part's new images into a file beside ``out``, renamed over it
    at the end; one part is in memory at a time, and an image already written is dropped. Returns how many
    records were dropped as repeats (a batch Ray retried after its result had arrived)."""
    fd, name = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    seen: set[str] = set()
    dropped = 0

    def fresh(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal dropped
        new = {}
        for rec in records:
            if rec[IMAGE] in seen or rec[IMAGE] in new:
                dropped += 1
            else:
                new[rec[IMAGE]] = rec
        seen.update(new)
        return list(new.values())

    try:
        if out.suffix == ".jsonl":
            with tmp.open("w") as fh:
                for row in _read_output(out):
                    seen.add(row[IMAGE])
                    fh.write(json.dumps(row) + "\n")
                for part in parts:
                    for rec in fresh(_records(part)):
                        fh.writelines(json.dumps(row) + "\n" for row in _lines(rec))
                fh.flush()
                os.fsync(fh.fileno())
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            # The columns and their types over every part first (a part of failures only has no task columns;
            # an integer column of one part may be a float column of another), then one part at a time.
            schemas = [pq.read_schema(out)] if out.exists() else []
            schemas += [_table([r for rec in _records(p) for r in _table_rows(rec)]).schema for p in parts]
            schema = (pa.unify_schemas(schemas, promote_options="permissive") if schemas
                      else pa.schema([(IMAGE, pa.string()), (ERROR, pa.string())]))
            names = [n for n in schema.names if n != WORKER] + [WORKER] * (WORKER in schema.names)
            schema = pa.schema([schema.field(n) for n in names])  # the worker last, whatever part came first
            with pq.ParquetWriter(tmp, schema) as writer:
                if out.exists():
                    for batch in pq.ParquetFile(out).iter_batches():
                        table = pa.Table.from_batches([batch])
                        seen.update(table.column(IMAGE).to_pylist())
                        writer.write_table(_conform(table, schema))
                for part in parts:
                    rows = [r for rec in fresh(_records(part)) for r in _table_rows(rec)]
                    if rows:
                        writer.write_table(_conform(_table(rows), schema))
                if not out.exists() and not parts:
                    writer.write_table(schema.empty_table())
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dropped


# -- the run ----------------------------------------------------------------------------------------
def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise DependencyError("predict --on ray needs Ray Data: pip install 'edgeinfer[ray]' (on every node of the "
                              f"cluster), found none ({exc}).") from exc
    return ray


def _source_files(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    from edgeinfer.pipeline.images import image_files

    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files = list(dict.fromkeys(f for p in map(Path, items) for f in (image_files(p) if p.is_dir() else [p])))
    if not files:
        raise ImageError(f"{source}: expected a folder with images or a list of files, found none.")
    return [str(f) for f in files]


def predict(model_path: str | os.PathLike, source: str | os.PathLike | Iterable[str | os.PathLike], *,
            out: str | os.PathLike, device: str = "cpu", address: str | None = None, threads: int | None = None,
            workers: int | None = None, batch: int = 8, top_k: int = 5, reference: Any = None,
            progress: Callable[[int, int], None] | None = None,
            on_records: Callable[[list[dict[str, Any]]], None] | None = None, engine: str = "onnxruntime",
            load_options: Mapping[str, Any] | None = None) -> RunReport:
    """Predict every image of ``source`` (a folder, a file or a list of paths) on a Ray cluster into ``out``.

    ``address`` is the cluster's (``ray start --head`` prints it; ``"auto"`` finds a local one); without it a
    Ray already initialised in this process is used, else a local one is started for the run. The paths must
    be readable on every node (a shared or copied folder). Each worker holds one model loaded with ``device``'s
    profile and ``threads`` ONNX Runtime threads (default: the profile's, or 1 where it leaves it to ONNX
    Runtime) on ``engine``, with ``load_options`` passed to :func:`edgeinfer.load` as they are (``spec``,
    ``labels``, ``imgsz``, ...); ``workers`` defaults to the cluster's CPUs divided by the threads. ``batch`` images go through
    ``predict_batch`` at a time. ``reference`` (from the workstation side: ``converters.compare.TorchReference``)
    adds agreement columns per image and a summary to the report. ``progress(done, total)`` is called as
    results arrive; ``on_records`` gets each arriving batch of records (dicts with the image, its error or
    None, its result as JSON text, the worker) right after they are committed to ``OUT.parts``.
    """
    from edgeinfer.providers import read_profile

    out = Path(out)
    if out.suffix not in FORMATS:
        raise ImageError(f"{out}: expected an output file ending in {' or '.join(FORMATS)}, found "
                         f"{out.suffix or 'no suffix'}. Name it results.parquet or results.jsonl.")
    if not Path(model_path).is_file():
        raise ModelError(f"{model_path}: expected an .onnx file, found nothing.")
    files = _source_files(source)
    profile = read_profile(device)
    threads = threads or profile.intra_op_threads or 1
    parts = _parts_dir(out)
    earlier = _part_files(parts)
    done = {r[IMAGE] for r in _read_output(out, columns=(IMAGE,))}
    done |= {rec[IMAGE] for part in earlier for rec in _records(part)}
    todo = [f for f in files if f not in done]

    ray = _ray()
    started = False
    if address is not None:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False, ignore_reinit_error=True)
    elif not ray.is_initialized():
        ray.init(logging_level="WARNING", log_to_driver=False, include_dashboard=False)
        started = True
    t0 = time.perf_counter()
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        pool = workers or max(1, int(cpus // threads))
        arrived = 0
        if todo:
            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # the library never prints: progress goes to ``progress``
            if hasattr(ctx, "print_on_execution_start"):
                ctx.print_on_execution_start = False
            # A block is what the driver commits at a time: one batch each for small folders, a few hundred
            # blocks at most for large ones (each a task to schedule), enough to keep every worker fed.
            blocks = min(-(-len(todo) // batch), max(16 * pool, 256))
            ds = ray.data.from_items([{IMAGE: f} for f in todo], override_num_blocks=blocks)
            ds = ds.map_batches(_Worker, batch_size=batch, batch_format="numpy", num_cpus=threads,
                                compute=ray.data.ActorPoolStrategy(size=pool),
                                fn_constructor_args=(str(model_path), str(device), threads, top_k, reference,
                                                     {**(load_options or {}), "engine": engine}))
            parts.mkdir(parents=True, exist_ok=True)
            n = len(earlier)
            for cols in ds.iter_batches(batch_size=None, batch_format="numpy"):
                columns = {k: v.tolist() for k, v in cols.items()}
                records = [{k: _text(v) for k, v in zip(columns, values)} for values in zip(*columns.values())]
                write_text_atomic(parts / f"part-{n:06d}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
                n += 1
                arrived += len(records)
                if on_records is not None:
                    on_records(records)
                if progress is not None:
                    progress(arrived, len(todo))
    finally:
        if started:
            ray.shutdown()
    seconds = time.perf_counter() - t0
    # Counts of this run: the images of the parts it wrote (beyond those an interrupted run left).
    fresh: dict[str, str | None] = {}
    ran_on: set[str] = set()
    for part in _part_files(parts)[len(earlier):]:
        for rec in _records(part):
            fresh.setdefault(rec[IMAGE], rec[ERROR])
            if rec.get(ENGINE):
                ran_on.add(rec[ENGINE])
    dropped = _finish(out, _part_files(parts))
    shutil.rmtree(parts, ignore_errors=True)
    summary = None
    if reference is not None:
        summary = reference.summary(_read_output(out, columns=(IMAGE, *reference.COLUMNS)))
    return RunReport(out=str(out), images=len(files), failed=sum(e is not None for e in fresh.values()),
                     predicted=sum(e is None for e in fresh.values()), skipped=len(files) - len(todo),
                     duplicates_dropped=dropped, workers=pool, threads_per_worker=threads, cluster_cpus=cpus,
                     nodes=nodes, seconds=seconds, reference=summary, engines=tuple(sorted(ran_on)))


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a results file written by :func:`predict` (JSONL or Parquet)."""
    return _read_output(Path(path))


__all__: Sequence[str] = ("FORMATS", "RunReport", "predict", "read_results")
