"""The arm64 parity suite, driven from the x86 workstation: ``./edge arm test [QEMU_CPU ...]``.

1. References on x86 (tests/arm64/references.py), rebuilt only when what decides them changes.
2. The runtime side inside the arm64 root once per emulated CPU (tests/arm64/device.py).
3. One table per CPU: per preprocessing family the worst pixel difference against the x86 reference
   library and against edgeinfer's own x86 pixels, the C kernel against the numpy fallback; per trained
   model (fp32, fp16, int8) the max |dp| and top-1 agreement against torch on x86; the self-test and
   ``edgeinfer check``. Written to benchmarks/arm64_parity.json; the table is printed as markdown for
   benchmarks/README.md.
4. The engines (tests/arm64/engine_parity.py, under the Pi 5's core): each engine ``arm.sh`` installed as an
   aarch64 wheel runs real models through edgeinfer, judged by the task's gate against the same engine and
   against ONNX Runtime on x86; the record's ``engines`` key (``--engines-only`` redoes just that key).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "arm64_parity.json"
DEFAULT_CPUS = ("cortex-a72", "cortex-a76")
BUNDLE_INSIDE = "/opt/edgeinfer-parity"  # the bundle's path inside the root
ENGINE_BUNDLE_INSIDE = "/opt/edgeinfer-engines"  # the engine parity's bundle (tests/arm64/engine_parity.py)
# Families whose arithmetic is integer and reproduced by edgeinfer's own code: 0 levels on any machine.
INTEGER_FAMILIES = ("PIL ", "torch uint8 ")


def _ensure_bundle(root: Path, inside: str, module: Any, what: str, *, rebuild: bool) -> dict:
    """The x86 side's bundle at ``inside`` the root, rebuilt by ``module.build`` unless its manifest already carries
    ``module.fingerprint()``."""
    bundle = root / inside.lstrip("/")
    manifest = bundle / "manifest.json"
    if not rebuild and manifest.exists():
        current = json.loads(manifest.read_text())
        if current.get("fingerprint") == module.fingerprint():
            print(f"arm64 suite: x86 {what} up to date ({bundle})", file=sys.stderr)
            return current
    print(f"arm64 suite: computing the x86 {what}", file=sys.stderr)
    return module.build(bundle, log=lambda m: print(m, file=sys.stderr))


def ensure_references(root: Path, *, rebuild: bool) -> dict:
    from tests.arm64 import references

    return _ensure_bundle(root, BUNDLE_INSIDE, references, "references (train, export, variants; a few minutes)",
                          rebuild=rebuild)


def start_device(arm_sh: str, cpu: str, *, tools: bool, only: str | None = None) -> subprocess.Popen:
    out = f"{BUNDLE_INSIDE}/out-{cpu}.json"
    cmd = [arm_sh, "run", "/opt/venv/bin/python", "/src/edgeinfer/tests/arm64/device.py", "--bundle", BUNDLE_INSIDE,
           "--out", out, "--resume"] + (["--tools"] if tools else []) + (["--only", only] if only else [])
    print(f"arm64 suite: QEMU_CPU={cpu}: {' '.join(cmd[2:])}", file=sys.stderr)
    return subprocess.Popen(cmd, env={**os.environ, "QEMU_CPU": cpu})


def run_devices(arm_sh: str, cpus: list[str], *, tools: bool) -> tuple[dict, dict]:
    """One emulated process per CPU, side by side (each is mostly single-threaded; ~20 min each here)."""
    root = Path(os.environ.get("EDGEINFER_ARM_ROOT", Path.home() / ".cache/edgeinfer/arm64-root"))
    t0 = time.perf_counter()
    # bench and tune once, on the last CPU (the Pi 5's core by default): correctness, not timings
    procs = {cpu: start_device(arm_sh, cpu, tools=tools and i == len(cpus) - 1) for i, cpu in enumerate(cpus)}
    runs, seconds = {}, {}
    for cpu, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"arm64 suite: the device run under QEMU_CPU={cpu} failed (exit {proc.returncode})")
        runs[cpu] = json.loads((root / BUNDLE_INSIDE.lstrip("/") / f"out-{cpu}.json").read_text())
        seconds[cpu] = runs[cpu]["seconds"]
    print(f"arm64 suite: device runs done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return runs, seconds


def summarise(manifest: dict, runs: dict[str, dict]) -> dict:
    """Per family and per CPU the worst differences; per model, kind and CPU the agreement."""
    families: dict[str, dict] = {}
    for cpu, res in runs.items():
        for row in res["preprocess"]:
            fam = families.setdefault(row["family"], {"cases": 0, "cpus": {}})
            per = fam["cpus"].setdefault(cpu, {})
            for mode, m in ((k, v) for k, v in row.items() if isinstance(v, dict)):
                agg = per.setdefault(mode, {"max_vs_reference_levels": 0.0, "max_vs_x86_edgeinfer_levels": 0.0,
                                            "x86_max_vs_reference_levels": 0.0, "pixels_differing_from_x86": 0,
                                            "c_kernel_equals_numpy": True, "c_vs_numpy_levels": 0.0,
                                            "cases_differing_from_x86": []})
                agg["c_vs_numpy_levels"] = max(agg["c_vs_numpy_levels"], m["c_vs_numpy_levels"])
                agg["max_vs_reference_levels"] = max(agg["max_vs_reference_levels"], m["vs_reference_levels"])
                agg["max_vs_x86_edgeinfer_levels"] = max(agg["max_vs_x86_edgeinfer_levels"], m["vs_x86_edgeinfer_levels"])
                agg["x86_max_vs_reference_levels"] = max(agg["x86_max_vs_reference_levels"], m["x86_vs_reference_levels"])
                agg["pixels_differing_from_x86"] += m["pixels_differing_from_x86"]
                agg["c_kernel_equals_numpy"] &= m["c_kernel_equals_numpy"]
                if m["pixels_differing_from_x86"]:
                    agg["cases_differing_from_x86"].append(row["case"])
        for name, fam in families.items():
            fam["cases"] = sum(r["family"] == name for r in res["preprocess"])
    models: dict[str, dict] = {}
    for cpu, res in runs.items():
        for m in res.get("models", []):
            entry = models.setdefault(m["name"], {"images": m["images"], "cpus": {}})
            entry["cpus"][cpu] = {k: m[k] for k in ("fp32", "fp16", "int8", "self_test", "check")}
    decode = {cpu: {"max_vs_x86_opencv_levels": max(r["vs_x86_opencv_levels"] for r in res["decode"]),
                    "max_vs_x86_pil_levels": max(r["vs_x86_pil_levels"] for r in res["decode"]),
                    "files": len(res["decode"])} for cpu, res in runs.items() if res.get("decode")}
    return {"families": families, "models": models, "decode": decode}


def table(summary: dict, cpus: list[str]) -> str:
    lines = ["| preprocessing family | cases | " + " | ".join(f"{c}: vs x86 reference / vs x86 edgeinfer" for c in cpus)
             + " | C kernel vs numpy fallback |", "|---|---|" + "---|" * len(cpus) + "---|"]
    for name, fam in summary["families"].items():
        for mode in ("exact", "fast"):
            if mode not in next(iter(fam["cpus"].values())):
                continue
            cells = []
            for c in cpus:
                m = fam["cpus"][c][mode]
                cells.append(f"{m['max_vs_reference_levels']:.3g} / {m['max_vs_x86_edgeinfer_levels']:.3g}")
            same = all(fam["cpus"][c][mode]["c_kernel_equals_numpy"] for c in cpus)
            apart = max(fam["cpus"][c][mode]["c_vs_numpy_levels"] for c in cpus)
            label = name if mode == "exact" else f"{name} (fast mode)"
            lines.append(f"| {label} | {fam['cases']} | " + " | ".join(cells) + " | "
                         + ("equal" if same else f"{apart:.1e} apart (float32 sum order)") + " |")
    lines += ["", "| model | variant | images | " + " | ".join(f"{c}: max abs dp / top-1 vs torch x86" for c in cpus)
              + " | self-test (diff / atol) | edgeinfer check |", "|---|---|---|" + "---|" * len(cpus) + "---|---|"]
    for name, m in summary["models"].items():
        for kind in ("fp32", "fp16", "int8"):
            cells = [str(m["cpus"][cpus[0]][kind].get("images", m["images"]))]
            cells += [f"{m['cpus'][c][kind]['vs_torch_x86']['max_abs_dp']:.2e} / "
                      f"{m['cpus'][c][kind]['vs_torch_x86']['top1_agreement']:.0%}" for c in cpus]
            st = " / ".join(f"{'pass' if m['cpus'][c]['self_test']['passed'] else 'FAIL'} "
                            f"{m['cpus'][c]['self_test']['max_abs_diff']:.1e} / {m['cpus'][c]['self_test']['atol']:.0e}"
                            for c in cpus) if kind == "fp32" else ""
            ck = " / ".join(f"exit {m['cpus'][c]['check']['exit_code']}" for c in cpus) if kind == "fp32" else ""
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + f" | {st} | {ck} |")
    return "\n".join(lines)


def ensure_engine_references(root: Path, *, rebuild: bool) -> dict:
    from tests.arm64 import engine_parity

    return _ensure_bundle(root, ENGINE_BUNDLE_INSIDE, engine_parity,
                          "engine references (models, convert --engine, x86 outputs)", rebuild=rebuild)


def run_engines(arm_sh: str, root: Path, *, rebuild: bool) -> dict:
    """The engine parity (tests/arm64/engine_parity.py) under the Pi 5's core: its summary for the record, with
    the failures it found."""
    from tests.arm64 import engine_parity

    manifest = ensure_engine_references(root, rebuild=rebuild)
    out = f"{ENGINE_BUNDLE_INSIDE}/out-{engine_parity.CPU}.json"
    cmd = [arm_sh, "run", "/opt/venv/bin/python", "/src/edgeinfer/tests/arm64/engine_parity.py", "device",
           "--bundle", ENGINE_BUNDLE_INSIDE, "--out", out, "--resume"]
    print(f"arm64 suite: QEMU_CPU={engine_parity.CPU}: {' '.join(cmd[2:])}", file=sys.stderr)
    t0 = time.perf_counter()
    if subprocess.run(cmd, env={**os.environ, "QEMU_CPU": engine_parity.CPU}).returncode != 0:
        raise SystemExit("arm64 suite: the engine run inside the root failed")
    bundle = root / ENGINE_BUNDLE_INSIDE.lstrip("/")
    summary = engine_parity.compare(bundle, manifest, json.loads((bundle / Path(out).name).read_text()))
    summary["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    summary["seconds"] = round(time.perf_counter() - t0)
    summary["failures"] = engine_parity.failures(summary)
    return summary


def engine_table(engines: dict) -> str:
    """The engines on arm64, as benchmarks/README.md shows them: per model and engine the task's gate against the
    same engine and against ONNX Runtime on x86, on x86's graph input (the engine alone) and end to end."""
    lines = [f"| model | graph input made on arm64 vs x86 | engine on arm64 | {engines['cpu']}, x86's input: vs the "
             "same engine on x86 / vs ORT on x86 | end to end: vs the same engine on x86 / vs ORT on x86 |",
             "|---|---|---|---|---|"]

    def cell(v: dict | None) -> str:
        if not v:
            return "–"
        if "top1_agreement" in v:  # classification: probabilities
            fig = f"dp {v['max_abs_diff']:.1e}, top-1 {v['top1_agreement']:.0%}"
        else:  # detection: boxes, counts and the raw outputs
            fig = (f"boxes {v['box_max_abs_diff']:.1e} px, {sum(v['candidate_detections'])}/{sum(v['detections'])}, "
                   f"raw rel {v['outputs_relative_diff']:.1e}")
        return f"{'pass' if v['passed'] else 'outside'} ({fig})"

    for name, m in engines["models"].items():
        i = m["input_vs_x86"]
        inp = f"{i['values_differing']:,} of {i['values']:,} values differ, max {i['max_abs_diff']:.2g}"
        for engine, row in m["engines"].items():
            if not row["ran"]:
                lines.append(f"| {name} | {inp} | {engine} | not run: {row.get('error', 'not installed')} | – |")
                continue
            cells = [" / ".join(cell(row.get(mode, {}).get(k)) for k in ("vs_same_engine_x86", "vs_onnxruntime_x86"))
                     for mode in ("tensor", "frame")]
            lines.append(f"| {name} | {inp} | {engine} {row.get('version', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cpus", nargs="*", default=list(DEFAULT_CPUS))
    parser.add_argument("--arm-sh", default=str(HERE / "arm.sh"))
    parser.add_argument("--rebuild-references", action="store_true")
    parser.add_argument("--no-tools", action="store_true", help="skip edgeinfer bench and tune")
    parser.add_argument("--no-record", action="store_true", help="print, do not write benchmarks/arm64_parity.json")
    parser.add_argument("--reuse", action="store_true", help="take the device results already in the root when "
                        "they were computed against the current references (e.g. after running CPUs in parallel)")
    parser.add_argument("--engines-only", action="store_true", help="only the engine parity: its key of the record "
                        "is replaced, the rest kept as it was measured")
    parser.add_argument("--no-engines", action="store_true", help="skip the engine parity (its key is kept)")
    args = parser.parse_args()
    root = Path(os.environ.get("EDGEINFER_ARM_ROOT", Path.home() / ".cache/edgeinfer/arm64-root"))
    t0 = time.perf_counter()
    previous = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    engines = previous.get("engines") if args.no_engines else run_engines(args.arm_sh, root,
                                                                         rebuild=args.rebuild_references)
    if engines:
        print(engine_table(engines))
        for f in engines["failures"]:
            print(f"FAIL (engines): {f}", file=sys.stderr)
    if args.engines_only:
        if not args.no_record:
            RESULT.write_text(json.dumps({**previous, "engines": engines}, indent=1) + "\n")
            print(f"arm64 suite: written the engines into {RESULT.relative_to(REPO)}", file=sys.stderr)
        return 1 if engines["failures"] else 0
    manifest = ensure_references(root, rebuild=args.rebuild_references)
    runs, seconds, todo = {}, {}, []
    for cpu in args.cpus:
        done = root / BUNDLE_INSIDE.lstrip("/") / f"out-{cpu}.json"
        if args.reuse and done.exists():
            previous = json.loads(done.read_text())
            if previous["fingerprint"] == manifest["fingerprint"] and not previous.get("partial"):
                runs[cpu], seconds[cpu] = previous, previous["seconds"]
                print(f"arm64 suite: QEMU_CPU={cpu}: reusing {done}", file=sys.stderr)
                continue
        todo.append(cpu)
    if todo:
        new_runs, new_seconds = run_devices(args.arm_sh, todo, tools=not args.no_tools)
        runs.update(new_runs)
        seconds.update(new_seconds)
    runs = {cpu: runs[cpu] for cpu in args.cpus}
    summary = summarise(manifest, runs)
    text = table(summary, args.cpus)
    print(text)
    failures = check(summary, runs)
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    if not args.no_record:
        record = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "x86": manifest["x86"],
                  "arm64": {cpu: {**r["arm64"], "machine": r["machine"], "emulated": r["emulated"],
                                  "c_kernel_module": r["c_kernel_module"], "seconds": round(seconds[cpu])}
                            for cpu, r in runs.items()},
                  "cpus": args.cpus, "fingerprint": manifest["fingerprint"], **summary,
                  "raspberry_pi_5_profile": runs[args.cpus[-1]].get("raspberry_pi_5_profile"),
                  "tools": runs[args.cpus[-1]].get("tools"), "failures": failures,
                  "total_seconds": round(time.perf_counter() - t0), "engines": engines}
        RESULT.write_text(json.dumps(record, indent=1) + "\n")
        print(f"arm64 suite: written {RESULT.relative_to(REPO)}", file=sys.stderr)
    return 1 if failures or (engines and engines["failures"]) else 0


def check(summary: dict, runs: dict[str, dict]) -> list[str]:
    """What the issue promises, checked on the measured figures."""
    out = []
    for cpu, res in runs.items():
        if res["arm64"]["resample_kernel"] != "c" or res["machine"] != "aarch64":
            out.append(f"{cpu}: the C kernel is not in use on {res['machine']} ({res['arm64']['resample_kernel']})")
    for name, fam in summary["families"].items():
        for cpu, per in fam["cpus"].items():
            for mode, m in per.items():
                # integer arithmetic: equal; float32: the fallback's BLAS order, within float32 rounding
                if not m["c_kernel_equals_numpy"] and (not name.startswith("torch float") or m["c_vs_numpy_levels"] > 0.01):
                    out.append(f"{name} ({mode}) on {cpu}: the C kernel and the numpy fallback differ by "
                               f"{m['c_vs_numpy_levels']} levels")
                if name.startswith(INTEGER_FAMILIES) and mode == "exact" and m["max_vs_reference_levels"] > 0:
                    out.append(f"{name} on {cpu}: {m['max_vs_reference_levels']} levels from the x86 reference")
    for name, m in summary["models"].items():
        for cpu, r in m["cpus"].items():
            if r["check"]["exit_code"] != 0:
                out.append(f"{name} on {cpu}: edgeinfer check found {r['check']['findings']}")
            if not r["self_test"]["passed"]:
                out.append(f"{name} on {cpu}: the self-test failed ({r['self_test']})")
            if r["fp32"]["vs_torch_x86"]["top1_agreement"] < 1.0 or r["fp32"]["vs_torch_x86"]["max_abs_dp"] > 1e-4:
                out.append(f"{name} fp32 on {cpu}: {r['fp32']['vs_torch_x86']} against torch on x86")
    return out


if __name__ == "__main__":
    sys.exit(main())
