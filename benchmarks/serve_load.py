"""Load test of `edgeinfer serve`: throughput and latency at 1, 4 and 16 concurrent clients, errors, and the
server's resident memory over the whole run (>= 10,000 requests), against Model.predict in-process.

The server is a second process (`python -m edgeinfer serve`, as a user starts it) on a loopback port; this
process is the client: keep-alive HTTP/1.1 connections (http.client), one thread per client, each POSTing
a real photo (chelsea, 451x300, JPEG quality 90) as the body of POST /predict and checking the answer.
The model is mobilenet_v3_small exported here (random weights: the speed does not depend on them). The
in-process reference is a third process (no torch imported, like the server) that decodes the same JPEG
bytes and calls Model.predict, as the server does per request, in chunks alternating with the one-client
HTTP chunks. Each answer carries the server's own decode + predict time (Server-Timing): the rest of a
round trip is HTTP, the framework and waiting (for a worker, for a core), paired request by request.
Server memory is its current resident set (/proc/PID/statm), sampled every 0.5 s. Writes serve_load.json.

    .venv/bin/python benchmarks/serve_load.py [--requests 4000] [--clients 1,4,16]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np


REFERENCE = """
import json, sys, time
import edgeinfer
from edgeinfer.pipeline.images import decode
model = edgeinfer.load(sys.argv[1])
body = open(sys.argv[2], "rb").read()
frame = decode(body, exif_orientation=False)
for line in sys.stdin:
    out = {"decode": [], "predict": [], "decode_and_predict": []}
    for _ in range(int(line)):
        t = time.perf_counter()
        frame = decode(body, exif_orientation=False)  # what the server does per request
        t1 = time.perf_counter()
        model.predict(frame)
        t2 = time.perf_counter()
        out["decode"].append((t1 - t) * 1e3)
        out["predict"].append((t2 - t1) * 1e3)
        out["decode_and_predict"].append((t2 - t) * 1e3)
    print(json.dumps(out), flush=True)
"""


def rss_mb(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p10": float(np.percentile(a, 10)), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "max": float(a.max())}


def run_level(port: int, body: bytes, want: dict, clients: int, requests: int, done: list[int]) -> dict:
    """``requests`` POST /predict spread over ``clients`` keep-alive connections."""
    latencies: list[float] = []
    overheads: list[float] = []
    errors: list[str] = []
    left = [requests]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        overhead: list[float] = []
        while True:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
            t = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "image/jpeg"})
                r = conn.getresponse()
                data = r.read()
                total = (time.perf_counter() - t) * 1e3
                mine.append(total)
                # the server's own decode + predict time for this request (its Server-Timing header): the
                # rest of the round trip is HTTP, framework and scheduling, paired request by request
                work = sum(float(part.split("dur=")[1]) for part in r.getheader("Server-Timing", "").split(",")
                           if "dur=" in part)
                overhead.append(total - work)
                if r.status != 200 or json.loads(data) != want:
                    errors.append(f"{r.status}: {data[:120]!r}")
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                done[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            overheads.extend(overhead)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "errors": len(errors), "error_examples": errors[:3],
            "wall_s": wall, "throughput_rps": requests / wall, "latency_ms": summary(latencies),
            "outside_model_ms": summary(overheads), "raw_ms": latencies, "raw_outside_ms": overheads}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000, help="requests per concurrency level")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--out", default=str(Path(__file__).with_name("serve_load.json")))
    parser.add_argument("--server-args", default="", help="extra `edgeinfer serve` arguments, e.g. '--workers 1'")
    args = parser.parse_args()
    import onnxruntime as ort
    import torchvision
    from skimage import data

    import converters
    import edgeinfer
    from converters.zoo import imagenet_eval_transform
    from edgeinfer.tools.bench import cpu_model
    from edgeinfer.pipeline.images import decode

    levels = [int(c) for c in args.clients.split(",")]
    body = cv2.imencode(".jpg", data.chelsea()[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilenet_v3_small.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converters.export(torchvision.models.mobilenet_v3_small(weights=None).eval(), path,
                              transform=imagenet_eval_transform())

        # the reference: the same bytes decoded and Model.predict in a fresh process of its own (no torch, as
        # on a device: like the server's), one call at a time, in chunks that alternate with the one-client
        # HTTP chunks below so that both see the same background load
        image = Path(tmp) / "chelsea.jpg"
        image.write_bytes(body)
        reference = subprocess.Popen([sys.executable, "-c", REFERENCE, str(path), str(image)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        inproc: dict[str, list[float]] = {"decode": [], "predict": [], "decode_and_predict": []}

        def in_process_chunk(n: int) -> None:
            reference.stdin.write(f"{n}\n")
            reference.stdin.flush()
            got = json.loads(reference.stdout.readline())
            for k in inproc:
                inproc[k] += got[k]

        in_process_chunk(100)
        inproc = {"decode": [], "predict": [], "decode_and_predict": []}  # the first 100: warm-up
        model = edgeinfer.load(path)
        want = model.predict(decode(body, exif_orientation=False)).to_dict()
        del model

        port = free_port()
        log = open(Path(tmp) / "server.log", "wb")
        server = subprocess.Popen([sys.executable, "-m", "edgeinfer", "serve", str(path), "--port", str(port),
                                   "--log-level", "warning", *args.server_args.split()], stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"the server did not start:\n{(Path(tmp) / 'server.log').read_text()}")
                    time.sleep(0.2)
            done = [0]
            samples: list[tuple[int, float]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((done[0], rss_mb(server.pid)))
                    stop.wait(0.5)

            warm = run_level(port, body, want, 4, 500, [0])  # warm-up, not counted
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            results = []
            paired: list[float] = []
            for c in levels:
                if c != 1:
                    results.append(run_level(port, body, want, c, args.requests, done))
                    continue
                chunks = []
                for _ in range(10):  # one client, in tenths, each after as many in-process calls
                    before = len(inproc["decode_and_predict"])
                    in_process_chunk(args.requests // 20)
                    chunks.append(run_level(port, body, want, 1, args.requests // 10, done))
                    # paired: this chunk's HTTP median minus the in-process median measured just before it
                    paired.append(chunks[-1]["latency_ms"]["p50"]
                                  - float(np.median(inproc["decode_and_predict"][before:])))
                results.append({"clients": 1, "requests": sum(r["requests"] for r in chunks),
                                "errors": sum(r["errors"] for r in chunks),
                                "error_examples": [e for r in chunks for e in r["error_examples"]][:3],
                                "wall_s": sum(r["wall_s"] for r in chunks),
                                "throughput_rps": sum(r["requests"] for r in chunks) / sum(r["wall_s"] for r in chunks),
                                "latency_ms": summary([x for r in chunks for x in r["raw_ms"]]),
                                "outside_model_ms": summary([x for r in chunks for x in r["raw_outside_ms"]])})
            stop.set()
            sampler.join()
            samples.append((done[0], rss_mb(server.pid)))
        finally:
            server.terminate()
            server.wait(60)
            reference.stdin.close()
            reference.wait(60)
    in_process = {k: summary(v) for k, v in inproc.items()}
    for r in results:
        r.pop("raw_ms", None)
        r.pop("raw_outside_ms", None)
    n = np.asarray([s[0] for s in samples], float)
    mem = np.asarray([s[1] for s in samples])
    slope = float(np.polyfit(n, mem, 1)[0] * 1000) if len(set(n)) > 1 else 0.0
    first = next(r for r in results if r["clients"] == 1)["latency_ms"] if 1 in levels else None
    out = {
        "date": datetime.date.today().isoformat(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(), "onnxruntime": ort.__version__, "edgeinfer": edgeinfer.__version__,
        "model": "mobilenet_v3_small (torchvision, random weights), ImageNet eval transform",
        "payload": {"image": "skimage chelsea, JPEG q90", "width": 451, "height": 300, "bytes": len(body)},
        "server": f"python -m edgeinfer serve {args.server_args} (uvicorn, h11), loopback".replace("  ", " "),
        "warmup_requests": warm["requests"], "warmup_errors": warm["errors"],
        "in_process_ms": in_process, "levels": results,
        "total_requests": int(done[0]), "total_errors": int(sum(r["errors"] for r in results)),
        "server_rss_mb": {"first": float(mem[0]), "last": float(mem[-1]), "min": float(mem.min()),
                          "max": float(mem.max()), "growth": float(mem[-1] / mem[0] - 1),
                          "slope_mb_per_1000_requests": slope, "samples": len(samples)},
        "overhead_ms_p50_one_client": first["p50"] - in_process["decode_and_predict"]["p50"] if first else None,
        # p10: what a request costs when no other process takes the core meanwhile (a loaded 2-core machine
        # stalls ~10 ms time slices into a third of the calls, in and out of the server alike)
        "overhead_ms_p10_one_client": first["p10"] - in_process["decode_and_predict"]["p10"] if first else None,
        "overhead_ms_paired_chunks": {"median": float(np.median(paired)), "min": float(np.min(paired)),
                                      "max": float(np.max(paired)), "chunks": len(paired)} if paired else None,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{out['cpu_model']} x{out['cpu_count']}, onnxruntime {out['onnxruntime']}, payload {len(body)} bytes JPEG "
          f"451x300; load average at end {out['load_average_at_end'][0]:.1f}")
    ip = in_process
    print(f"in process: decode p50 {ip['decode']['p50']:.2f} ms, predict p50 {ip['predict']['p50']:.2f} ms; "
          f"decode + predict p50 "
          f"{ip['decode_and_predict']['p50']:.2f} ms, p99 {ip['decode_and_predict']['p99']:.2f} ms")
    print(f"{'clients':>7s} {'requests':>8s} {'errors':>6s} {'req/s':>7s} {'p10 ms':>7s} {'p50 ms':>7s} {'p90 ms':>7s} "
          f"{'p99 ms':>7s}"
          f" {'outside decode+predict p50 ms':>30s}")
    for r in results:
        lat = r["latency_ms"]
        print(f"{r['clients']:7d} {r['requests']:8d} {r['errors']:6d} {r['throughput_rps']:7.1f} {lat['p10']:7.2f} "
              f"{lat['p50']:7.2f} "
              f"{lat['p90']:7.2f} {lat['p99']:7.2f} {r['outside_model_ms']['p50']:30.2f}")
    m = out["server_rss_mb"]
    print(f"server RSS over {out['total_requests']} requests: {m['first']:.1f} -> {m['last']:.1f} MB "
          f"(max {m['max']:.1f}, {m['growth']:+.2%}, slope {m['slope_mb_per_1000_requests']:+.3f} MB / 1000 requests)")
    if first:
        print(f"HTTP overhead at one client (p50, HTTP minus in-process decode + predict): "
              f"{out['overhead_ms_p50_one_client']:.2f} ms per request")
        print(f"  at p10: {out['overhead_ms_p10_one_client']:.2f} ms (HTTP {first['p10']:.2f} ms, in process "
              f"{in_process['decode_and_predict']['p10']:.2f} ms)")
        pc = out["overhead_ms_paired_chunks"]
        print(f"  paired by chunk (median of {pc['chunks']} chunk medians' differences): {pc['median']:.2f} ms "
              f"(min {pc['min']:.2f}, max {pc['max']:.2f})")


if __name__ == "__main__":
    main()
