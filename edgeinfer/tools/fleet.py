"""One comparison of the same model on many devices, from the JSON reports each device wrote.

``bench`` gives latency percentiles and throughput, ``parity`` agreement with the training reference,
``tune`` the engine, precision and provider chosen there, ``check`` the self-test and the doctor's findings. Each
report records its device profile and the environment it ran in (host, architecture, providers used,
ONNX Runtime version, CPU); a *device* here is the profile on one host and architecture. A device whose
parity or self-test differs from the others running the same model file is an outlier, listed first.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from edgeinfer.errors import EdgeInferError
from edgeinfer.tools.reports import read_report

# A device's top-1 agreement this far below the median of the others' (share of images), or its largest
# probability difference this many times theirs (and above the floor), marks it as an outlier.
TOP1_TOLERANCE = 0.01
DIFF_FACTOR = 10.0
DIFF_FLOOR = 1e-4
ARCHES = ("x86_64", "aarch64", "arm64", "armv7l", "armv8l", "AMD64", "i686", "riscv64", "ppc64le", "s390x")


@dataclass(frozen=True)
class Outlier:
    """A device that differs from the others on one model: what differs, and by how much."""

    device: str
    model: str
    kind: str  # "self_test" | "findings" | "parity"
    message: str
    candidate: str | None = None  # parity: "deployment", "variant" or "export"

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "model": self.model, "kind": self.kind, "candidate": self.candidate,
                "message": self.message}


@dataclass(frozen=True)
class FleetReport:
    """Every figure of the reports, one row per device and model (and batch size, candidate, tune config)."""

    sources: tuple[dict[str, Any], ...]
    latency: tuple[dict[str, Any], ...]
    agreement: tuple[dict[str, Any], ...]
    tuning: tuple[dict[str, Any], ...]
    checks: tuple[dict[str, Any], ...]
    outliers: tuple[Outlier, ...]

    @property
    def devices(self) -> list[str]:
        return sorted({s["device"] for s in self.sources})

    def to_dict(self) -> dict[str, Any]:
        return {"devices": self.devices, "outliers": [o.to_dict() for o in self.outliers],
                "latency": list(self.latency), "agreement": list(self.agreement), "tuning": list(self.tuning),
                "checks": list(self.checks), "sources": list(self.sources)}

    def to_markdown(self, plots: Sequence[str | os.PathLike] = (), *, relative_to: str | os.PathLike | None = None
                    ) -> str:
        """The comparison as markdown: outliers first, then latency, agreement, tune and self-test tables."""
        flagged = {(o.device, o.model, o.kind, o.candidate) for o in self.outliers}
        mark = lambda r, kinds: "⚠ " if any((r["device"], r["model"], k, r.get("candidate")) in flagged  # noqa: E731
                                            for k in kinds) else ""
        lines = ["# Fleet report", "",
                 f"{len(self.sources)} report{'s' * (len(self.sources) != 1)} from {len(self.devices)} "
                 f"device{'s' * (len(self.devices) != 1)}: "
                 + ", ".join(f"`{d}`" for d in self.devices) + ".", ""]
        lines += ["## Outliers", ""]
        if self.outliers:
            lines += [f"- ⚠ **{o.device}**, `{o.model}` ({o.kind}): {o.message}" for o in self.outliers]
        else:
            lines.append("None: every device agrees with the others on parity and self-test.")
        lines.append("")
        if self.latency:
            lines += ["## Latency and throughput (bench)", "",
                      "End to end per call (decode, preprocess, inference, postprocess), ms.", "",
                      "| device | model | batch | p50 | p90 | p99 | mean | std | min | max | images/s | decode / "
                      "preprocess / inference / postprocess | peak MB | cold start s | providers used | engine "
                      "| CPU |", "|" + "---|" * 17]
            for r in self.latency:
                emu = " (emulated)" if r["emulated"] else ""
                stages = " / ".join(f"{r['stages_ms'][k]:.2f}" for k in ("decode", "preprocess", "inference",
                                                                       "postprocess"))
                cold = f"{r['cold_start_s']:.2f}" if r["cold_start_s"] is not None else "-"
                lines.append(
                    f"| {r['device']}{emu} | `{r['model']}` | {r['batch']} | {r['p50']:.2f} | {r['p90']:.2f} | "
                    f"{r['p99']:.2f} | {r['mean']:.2f} | {r['std']:.2f} | {r['min']:.2f} | {r['max']:.2f} | "
                    f"{r['throughput_ips']:.1f} | {stages} | {r['peak_rss_mb']:.0f} | {cold} | "
                    f"{', '.join(r['providers_used'])} | {r['engine']} | {r['cpu_model']} x{r['cpu_count']} |")
            emulated = sorted({(r["device"], r["emulated"]) for r in self.latency if r["emulated"]})
            lines += [""] + [f"- `{d}` ran under emulation ({why}): its timings are not the device's." for d, why in
                             emulated] + ([""] if emulated else [])
        if self.agreement:
            lines += ["## Agreement with the reference (parity)", "",
                      "Reference: the torch model on the training transform. *export*: the ONNX graph fed the "
                      "reference's tensors; *deployment*: the device pipeline on the raw image files.", "",
                      "| device | model | candidate | images | top-1 | top-5 | max abs dp | mean abs dp | "
                      "max abs dout | worst images (max abs dp) | providers used |", "|" + "---|" * 11]
            for r in self.agreement:
                worst = ", ".join(f"{Path(w['image']).name} ({w['max_abs_diff']:.1e})" for w in r["worst"][:3])
                lines.append(f"| {mark(r, ('parity',))}{r['device']} | `{r['model']}` | {r['candidate']} | "
                             f"{r['images']} | {r['top1_agreement']:.1%} | {r['top5_agreement']:.1%} | {r['max_abs_diff']:.2e} | "
                             f"{r['mean_abs_diff']:.2e} | {r['max_abs_diff_raw']:.2e} | {worst} | "
                             f"{', '.join(r['providers_used'])} |")
            lines.append("")
        if self.tuning:
            lines += ["## Tune's choice", "", "| device | model | chosen | engine | precision | provider | threads | "
                      "median ms | the task's gate against fp32 | passes gate |", "|" + "---|" * 10]
            for r in self.tuning:
                figures = ", ".join(f"{k} {v:.3g}" for k, v in r["gate"].items() if isinstance(v, float))
                lines.append(f"| {r['device']} | `{r['model']}` | {'**chosen**' if r['chosen'] else ''} | "
                             f"{r['engine']} {r['engine_version']} | {r['precision']} | {r['provider']} | "
                             f"{r['threads']} | {r['median_ms']:.2f} | {figures} | {'yes' if r['passes'] else 'no'} |")
            lines.append("")
        if self.checks:
            lines += ["## Self-test and checks", "", "| device | model | self-test | max abs diff | images checked | "
                      "findings (error, warning) | other figures measured | providers used |", "|" + "---|" * 8]
            for r in self.checks:
                st = {True: "passes", False: "**fails**", None: "absent"}[r["self_test_passed"]]
                diff = f"{r['self_test_max_abs_diff']:.2e}" if r["self_test_max_abs_diff"] is not None else "-"
                other = "; ".join(f"{k} {_figure(v)}" for k, v in r["measured"].items())
                lines.append(f"| {mark(r, ('self_test', 'findings'))}{r['device']} | `{r['model']}` | {st} | {diff} | "
                             f"{r['images']} | {', '.join(r['problems']) or 'none'} | {other} | "
                             f"{', '.join(r['providers_used'])} |")
            lines.append("")
        if plots:
            lines += ["## Plots", ""]
            for p in plots:
                shown = os.path.relpath(p, relative_to) if relative_to is not None else str(p)
                lines.append(f"![{Path(p).stem}]({shown})")
            lines.append("")
        lines += ["## Sources", "", "| file | kind | device | model |", "|---|---|---|---|"]
        shown = lambda f: os.path.relpath(f, relative_to) if relative_to is not None else f  # noqa: E731
        lines += [f"| {shown(s['file'])} | {s['kind']} | {s['device']} | `{s['model']}` |" for s in self.sources]
        return "\n".join(lines) + "\n"


def _figure(value: Any) -> str:
    """A measured value as the report prints it: numbers to three significant digits, lists and dicts inline."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {_figure(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_figure(v) for v in value) + "]"
    return str(value)


def _machine(env: dict[str, Any]) -> str:
    if env.get("machine"):
        return str(env["machine"])
    found = [a for a in ARCHES if a in str(env.get("platform", ""))]  # reports older than the machine field
    return found[0] if found else "unknown"


def device_label(data: dict[str, Any]) -> str:
    """``profile @ host/arch``: the profile a report ran with, on which machine."""
    env = data.get("environment") or {}
    device = str(data.get("device", "unknown"))
    if device.endswith(".toml"):  # a profile given by its file: the file is named after the profile
        device = Path(device).stem
    return f"{device} @ {env.get('host') or 'unknown'}/{_machine(env)}"


def _model(path: Any) -> str:
    return Path(str(path)).name


def _bench_rows(data: dict[str, Any], device: str) -> list[dict[str, Any]]:
    env = data["environment"]
    return [{"device": device, "model": _model(data["model"]), "batch": b["batch"], **b["latency_ms"],
             "throughput_ips": b["throughput_ips"], "stages_ms": b["stages_ms"], "peak_rss_mb": data["peak_rss_mb"],
             "cold_start_s": (data.get("cold_start_s") or {}).get("total"), "images": data["images"]["count"],
             "providers_used": env["providers_used"],
             "onnxruntime": env["onnxruntime"],
             # reports older than the engine seam ran ONNX Runtime
             "engine": f"{env.get('engine', 'onnxruntime')} {env.get('engine_version', env['onnxruntime'])}",
             "cpu_model": env["cpu_model"], "cpu_count": env["cpu_count"],
             "emulated": env.get("emulated"),
             "preprocess": data.get("preprocess")} for b in data["batches"]]


def _parity_rows(data: dict[str, Any], device: str) -> list[dict[str, Any]]:
    env = data.get("environment") or {}
    rows = []
    for c in data["candidates"]:
        name = c["name"]
        model = name.split(":", 1)[1] if name.startswith("variant:") else _model(data["model"])
        rows.append({"device": device, "model": model, "candidate": name.split(":", 1)[0], "images": data["images"],
                     **{k: c[k] for k in ("top1_agreement", "top5_agreement", "max_abs_diff", "mean_abs_diff",
                                          "max_abs_diff_raw")}, "worst": c.get("worst", []),
                     "providers_used": env.get("providers_used", []) if name != "export" else ["CPUExecutionProvider"]})
    return rows


def _tune_rows(data: dict[str, Any], device: str) -> list[dict[str, Any]]:
    chosen = data.get("chosen")
    rows = []
    for r in data["rows"]:
        row = r
        if data.get("schema") == "edgeinfer.tune/1":  # ONNX Runtime only, judged by top-1 agreement
            row = {"engine": "onnxruntime", "engine_version": (data.get("environment") or {}).get("onnxruntime", ""),
                   **r, "gate": {"top1_agreement": r["top1_agreement"], "max_abs_diff": r["max_abs_diff"],
                                 "min_agreement": data["min_agreement"]}}
        rows.append({"device": device, "model": _model(data["model"]), "chosen": r == chosen, **row})
    return rows


def _check_row(data: dict[str, Any], device: str) -> dict[str, Any]:
    codes = [f["code"] for f in data["findings"]]
    measured = data.get("measured", {})
    passed = None if "selftest_missing" in codes or "self_test_max_abs_diff" not in measured else \
        "selftest_failed" not in codes
    return {"device": device, "model": _model(data["model"]), "ok": data["ok"], "self_test_passed": passed,
            "self_test_max_abs_diff": measured.get("self_test_max_abs_diff"), "images": measured.get("images", 0),
            "problems": sorted({f["code"] for f in data["findings"] if f["severity"] in ("error", "warning")}),
            "measured": {k: v for k, v in measured.items() if k not in ("self_test_max_abs_diff", "images")},
            "providers_used": (data.get("environment") or {}).get("providers_used", [])}


def _outliers(agreement: Sequence[dict[str, Any]], checks: Sequence[dict[str, Any]]) -> list[Outlier]:
    out: list[Outlier] = []
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in checks:
        by_model.setdefault(r["model"], []).append(r)
    for model, rows in by_model.items():
        for r in rows:
            others = [o for o in rows if o is not r]
            if r["self_test_passed"] is False:
                passing = sum(o["self_test_passed"] is True for o in others)
                out.append(Outlier(r["device"], model, "self_test",
                                   f"the embedded self-test fails (max diff {r['self_test_max_abs_diff']:.2e})"
                                   + (f" where {passing} other device(s) pass" if passing else "")))
            if others:
                common = set.intersection(*(set(o["problems"]) for o in others))
                extra = [c for c in r["problems"] if c not in common and c != "selftest_failed"]
                if extra:
                    out.append(Outlier(r["device"], model, "findings",
                                       f"findings the others do not have: {', '.join(extra)}"))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in agreement:
        groups.setdefault((r["model"], r["candidate"]), []).append(r)
    for (model, candidate), rows in groups.items():
        for r in rows:
            others = [o for o in rows if o is not r]
            if not others:
                continue
            top1 = statistics.median(o["top1_agreement"] for o in others)
            diff = statistics.median(o["max_abs_diff"] for o in others)
            why = []
            if r["top1_agreement"] < top1 - TOP1_TOLERANCE:
                why.append(f"top-1 agreement {r['top1_agreement']:.1%} where the others have {top1:.1%} (median)")
            if r["max_abs_diff"] > max(DIFF_FACTOR * diff, DIFF_FLOOR):
                why.append(f"max abs dp {r['max_abs_diff']:.2e} where the others have {diff:.2e} (median)")
            if why:
                out.append(Outlier(r["device"], model, "parity", f"{candidate}: " + "; ".join(why), candidate))
    order = {"self_test": 0, "parity": 1, "findings": 2}
    return sorted(out, key=lambda o: (order[o.kind], o.device, o.model))


def compare(paths: Iterable[str | os.PathLike]) -> FleetReport:
    """Read bench, parity, check and tune reports (any order, any devices) into one :class:`FleetReport`.

    A report of another schema version, or not an edgeinfer report, is refused by name
    (:class:`~edgeinfer.errors.SchemaVersionError`)."""
    sources, latency, agreement, tuning, checks = [], [], [], [], []
    for path in sorted(map(str, paths)):
        kind, data = read_report(path)
        device = device_label(data)
        sources.append({"file": path, "kind": kind, "device": device, "model": _model(data["model"])})
        if kind == "bench":
            latency += _bench_rows(data, device)
        elif kind == "parity":
            agreement += _parity_rows(data, device)
        elif kind == "tune":
            tuning += _tune_rows(data, device)
        else:
            checks.append(_check_row(data, device))
    if not sources:
        raise EdgeInferError("fleet: expected at least one report (bench, parity, check or tune JSON), found none.")
    key = lambda r: (r["device"], r["model"])  # noqa: E731
    return FleetReport(sources=tuple(sources), latency=tuple(sorted(latency, key=lambda r: (*key(r), r["batch"]))),
                       agreement=tuple(sorted(agreement, key=lambda r: (r["model"], r["candidate"], r["device"]))),
                       tuning=tuple(sorted(tuning, key=lambda r: (*key(r), r["median_ms"]))),
                       checks=tuple(sorted(checks, key=key)), outliers=tuple(_outliers(agreement, checks)))


def report(paths: Iterable[str | os.PathLike], *, out: str | os.PathLike | None = None,
           plots: str | os.PathLike | None = None) -> FleetReport:
    """Compare the reports, write the markdown to ``out`` and the plots (latency and agreement per device)
    into the folder ``plots`` (needs matplotlib); return the comparison."""
    from edgeinfer.tools.files import write_text_atomic

    result = compare(paths)
    written: list[Path] = []
    if plots is not None:
        from edgeinfer.tools.plots import plot_fleet_agreement, plot_fleet_latency

        folder = Path(plots)
        folder.mkdir(parents=True, exist_ok=True)
        if result.latency:
            written.append(folder / "fleet_latency.png")
            plot_fleet_latency(result, written[-1])
        if result.agreement:
            written.append(folder / "fleet_agreement.png")
            plot_fleet_agreement(result, written[-1])
    if out is not None:
        write_text_atomic(out, result.to_markdown(written, relative_to=Path(out).parent))
    return result


__all__ = ["FleetReport", "Outlier", "compare", "device_label", "report"]
