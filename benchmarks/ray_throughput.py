"""`predict --engine ray` against the single-process folder run, on the same files, and what N workers would give.

The folder: real photos (scikit-image, scikit-learn) and crops of them at many sizes, written as JPEG and PNG
(COPIES passes over the set give the image count). The model: an exported classifier (``--model``; default
the resnet18 "which photo is this?" classifier trained here, ~1-3 min). Three measurements, each a fresh
process as a user would run it:

1. ``edgeinfer predict MODEL DIR --out single.jsonl`` -- one process, one session, batches of 8;
2. ``edgeinfer predict MODEL DIR --engine ray --out ray.jsonl`` -- a local Ray started for the run, one
   actor per CPU with one ONNX Runtime thread each;
3. the per-worker rate: one process, one thread, doing exactly a worker's job (read, decode, predict_batch)
   over the folder -- the unit of the scaling estimate.

From two Ray runs in one process (half of the files, then all of them): the marginal rate (the second half's
images over the extra time) and the fixed cost (actor start, model loads) it leaves; and Ray's own start. The estimate for N workers on N free cores: ``images / (N * per_worker_rate)`` plus
the fixed cost, times the share of its workers' rate the Ray run delivered here once started, capped by the
driver's rate (it receives every result and writes it: measured as the time writing this run's results takes
per image). Writes ray_throughput.json; the table in README.md comes from its print.

    .venv/bin/python benchmarks/ray_throughput.py [--model m.onnx] [--copies 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# the test material (tests/material) is imported from the checkout: a script's own folder is on sys.path, not the root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def _folder(folder: Path, copies: int) -> list[Path]:
    import cv2
    import numpy as np
    import skimage
    import sklearn

    sk = Path(skimage.__file__).parent / "data"
    sources = [sk / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg",
                                "motorcycle_left.png", "hubble_deep_field.jpg", "brick.png", "color.png", "ihc.png")]
    sources += [Path(sklearn.__file__).parent / "datasets" / "images" / n for n in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for c in range(copies):
        for src in sources:
            img = cv2.imread(str(src))
            h, w = img.shape[:2]
            s = rng.uniform(0.5, 1.0)  # a crop of a different size each pass: no two files alike
            ch, cw = max(64, int(h * s)), max(64, int(w * s))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            ext = ".jpg" if c % 2 == 0 else ".png"
            cv2.imwrite(str(folder / f"{src.stem}_{c}{ext}"), img[y:y + ch, x:x + cw])
    return sorted(folder.iterdir())


def _run(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - t, done.stdout


def _rate(model_path: str, files: list[Path], batch: int, threads: int | None) -> float:
    """Images per second of a worker's job (read, decode, predict_batch) in this process, after a warm-up batch;
    ``threads=None``: ONNX Runtime's default, as the single-process CLI run uses."""
    import edgeinfer
    from edgeinfer.pipeline.images import read

    model = edgeinfer.load(model_path, threads=threads)
    model.predict_batch([read(f, exif_orientation=False) for f in files[:batch]])
    t = time.perf_counter()
    for i in range(0, len(files), batch):
        model.predict_batch([read(f, exif_orientation=model.spec.decode.exif_orientation) for f in files[i:i + batch]])
    return len(files) / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="an exported classifier (.onnx); default: train the photo classifier")
    parser.add_argument("--copies", type=int, default=10, help="passes over the 12 photos (crops of new sizes)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", default=str(HERE / "ray_throughput.json"))
    args = parser.parse_args()

    import ray

    from edgeinfer.tools import distributed
    from edgeinfer.tools.bench import cpu_model
    from edgeinfer.tools.files import write_text_atomic

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / "model.onnx"
        if args.model:
            shutil.copy(args.model, model)
        else:
            from skimage import data

            import converters
            from tests.material.photos import train_photo_classifier
            from converters.zoo import imagenet_eval_transform

            photos = [getattr(data, n)() for n in PHOTOS]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converters.export(train_photo_classifier("resnet18", photos), model,
                                  transform=imagenet_eval_transform(), labels=list(PHOTOS), images=photos)
        files = _folder(work / "photos", args.copies)
        n = len(files)
        cli = [sys.executable, "-m", "edgeinfer", "predict", str(model), str(work / "photos"), "--batch",
               str(args.batch)]
        single_s, _ = _run(cli + ["--out", str(work / "single.jsonl")])
        ray_s, _ = _run(cli + ["--engine", "ray", "--out", str(work / "ray.jsonl"), "--json"])
        per_worker = _rate(str(model), files, args.batch, threads=1)
        single_steady = _rate(str(model), files, args.batch, threads=None)

        # In-process on a local Ray: its start, then the fixed cost of a run and the marginal rate.
        arrivals: list[tuple[float, int]] = []
        ti = time.perf_counter()
        ray.init(logging_level="WARNING", log_to_driver=False, include_dashboard=False)
        ray_init_s = time.perf_counter() - ti
        try:
            driver: list[float] = []
            received: list[dict] = []

            def on_records(records):
                arrivals.append((time.perf_counter(), len(records)))
                received.extend(records)

            # A run on half of the files, then one on all of them: the fixed cost (actor start, model loads)
            # is the same in both, so the difference is the time the second half of the images took.
            # A warm-up run first: the first actors of a fresh Ray pay for cold imports the later ones do not.
            # Two rounds; the differences are averaged.
            distributed.predict(str(model), files[: n // 4], out=work / "warm.jsonl", batch=args.batch)
            halves, totals = [], []
            for r in range(2):
                th = time.perf_counter()
                distributed.predict(str(model), files[: n // 2], out=work / f"half{r}.jsonl", batch=args.batch)
                halves.append(time.perf_counter() - th)
                arrivals.clear()
                received.clear()
                t0 = time.perf_counter()
                report = distributed.predict(str(model), work / "photos", out=work / f"inproc{r}.jsonl",
                                             batch=args.batch, on_records=on_records)
                totals.append(time.perf_counter() - t0)
            half, total = sum(halves) / 2, sum(totals) / 2
            # The driver's own cost per image: what it does with every result (a part written per batch, the
            # final merge into the output), timed on the records of this run by doing it again, for JSONL and
            # Parquet (the mean of the two).
            td = time.perf_counter()
            for suffix in (".jsonl", ".parquet"):
                again = work / f"again{suffix}"
                parts = again.with_name(again.name + ".parts")
                parts.mkdir()
                for i in range(0, len(received), args.batch):
                    write_text_atomic(parts / f"part-{i:06d}.jsonl",
                                      "".join(json.dumps(r) + "\n" for r in received[i:i + args.batch]))
                distributed._finish(again, distributed._part_files(parts))
            driver.append((time.perf_counter() - td) / (2 * len(received)))
        finally:
            ray.shutdown()
    first = arrivals[0][0] - t0
    # The marginal rate: the images beyond the half run over the extra time the full run took. (A rate from
    # the arrival times is not one: Ray Data buffers finished blocks and hands them over in bursts.)
    steady = (n - n // 2) / (total - half) if total > half else float("nan")
    fixed = max(0.0, total - n / steady) if steady == steady and steady > 0 else first
    workers = report.workers
    driver_ips = 1.0 / driver[0] if driver[0] > 0 else float("inf")
    # How much of its workers' combined rate the Ray run delivered at the margin (Ray's scheduling, object
    # transfers, the driver's receiving), capped at 100 %: the efficiency the estimate below assumes for any N.
    # On a shared machine more worker processes also get more of the CPU, which can push it past 100 %.
    efficiency = min(1.0, steady / (workers * per_worker)) if per_worker > 0 and steady == steady else 1.0
    scaling = []
    for w in (1, 2, 4, 8, 16, 32, 64):
        for images in (n, 100_000, 1_000_000):
            rate = min(w * per_worker * efficiency, driver_ips)
            scaling.append({"workers": w, "images": images, "expected_s": fixed + images / rate,
                            "expected_images_per_s": images / (fixed + images / rate)})
    result = {
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "ray": ray.__version__,
                    "load_average_1_5_15": list(os.getloadavg())},  # a shared machine: what else was running
        "images": n, "batch": args.batch,
        "single_process": {"wall_s": single_s, "images_per_s": n / single_s,
                           "steady_images_per_s": single_steady},
        "ray_cli": {"wall_s": ray_s, "images_per_s": n / ray_s, "workers": workers,
                    "threads_per_worker": report.threads_per_worker},
        "ray_in_process": {"ray_init_s": ray_init_s, "half_runs_s": halves, "full_runs_s": totals,
                           "half_run_s": half, "total_s": total,
                           "time_to_first_result_s": first, "marginal_images_per_s": steady, "fixed_s": fixed,
                           "run_s": report.seconds},
        "per_worker_images_per_s": per_worker, "ray_efficiency": efficiency,
        "driver_s_per_image": driver[0], "driver_images_per_s": driver_ips,
        "expected_scaling": scaling,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{n} images, batch {args.batch}, {cpu_model()} x{os.cpu_count()}, ray {ray.__version__}, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"{'run':44s} {'wall s':>8s} {'images/s':>9s}")
    print(f"{'single process (edgeinfer predict --out)':44s} {single_s:8.2f} {n / single_s:9.2f}")
    print(f"{'--engine ray, local Ray started for the run':44s} {ray_s:8.2f} {n / ray_s:9.2f}   "
          f"({workers} workers x {report.threads_per_worker} thread)")
    print(f"ray in process: ray.init {ray_init_s:.2f} s; {n // 2} images {' / '.join(f'{h:.2f}' for h in halves)} s,"
          f" {n} images {' / '.join(f'{t:.2f}' for t in totals)} s "
          f"(first result after {first:.2f} s): {steady:.2f} images/s at the margin, fixed cost {fixed:.2f} s")
    print(f"single process after start-up (ONNX Runtime's default threads): {single_steady:.2f} images/s")
    print(f"one worker's job, one thread, one process: {per_worker:.2f} images/s; Ray delivered {efficiency:.0%} of "
          f"{workers} x that at the margin (capped at 100 %); driver: {driver[0] * 1e3:.3f} ms per image ({driver_ips:.0f} images/s "
          "ceiling)")
    print("expected wall time and rate with N workers on N free cores (fixed cost + images / (N x per-worker x "
          "efficiency), capped by the driver):")
    print(f"{'workers':>7s} " + " ".join(f"{'%d images' % i:>16s}" for i in (n, 100_000, 1_000_000)))
    for w in (1, 2, 4, 8, 16, 32, 64):
        row = [s for s in scaling if s["workers"] == w]
        print(f"{w:7d} " + " ".join(f"{s['expected_s']:9.0f} s {s['expected_images_per_s']:5.0f}/s" for s in row))


if __name__ == "__main__":
    main()
