"""Pictures a person would rather look at than read. matplotlib is imported lazily (``[plots]`` extra)."""

from __future__ import annotations

import os
from typing import Any

from edgeinfer.errors import EdgeInferError


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise EdgeInferError("plots need matplotlib: pip install 'edgeinfer[plots]'.") from exc
    return plt


def plot_bench(result: Any, path: str | os.PathLike) -> None:
    """Latency distribution per batch size, throughput by batch size and the stage split, as one PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for b in result.batches:
        axes[0].hist(b.samples_ms, bins=30, alpha=0.6, label=f"batch {b.batch}: p50 {b.latency_ms['p50']:.1f} ms, "
                     f"p99 {b.latency_ms['p99']:.1f} ms")
    axes[0].set(title="Latency per call", xlabel="ms", ylabel="calls")
    axes[0].legend(fontsize=8)
    sizes = [str(b.batch) for b in result.batches]
    axes[1].bar(sizes, [b.throughput_ips for b in result.batches], color="tab:green")
    axes[1].set(title="Throughput", xlabel="batch size", ylabel="images / s")
    bottom = [0.0] * len(result.batches)
    for stage in ("decode", "preprocess", "inference", "postprocess"):
        vals = [b.stages_ms[stage] / b.batch for b in result.batches]
        axes[2].bar(sizes, vals, bottom=bottom, label=stage)
        bottom = [x + y for x, y in zip(bottom, vals)]
    axes[2].set(title="Time per image by stage", xlabel="batch size", ylabel="ms / image")
    axes[2].legend(fontsize=8)
    env = result.environment
    fig.suptitle(f"{os.path.basename(result.model)} on {env['cpu_model']} ({env['cpu_count']} cores), "
                 f"{', '.join(env['providers_used'])}, onnxruntime {env['onnxruntime']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _denormalize(chw: Any, spec: Any) -> Any:
    """A model input (C, H, W) back to 0-255 pixels (H, W, C) using the spec's normalisation."""
    import numpy as np

    x = np.asarray(chw, dtype=np.float64).copy()
    for step in reversed(spec.steps):
        if step.op == "normalize":
            mean = np.asarray(step.params["mean"]).reshape(-1, 1, 1)
            std = np.asarray(step.params["std"]).reshape(-1, 1, 1)
            x = x * std + mean
        if step.op == "to_float" and step.params["scale"] != "none":
            x = x * 255.0
    img = np.clip(x, 0, 255).transpose(1, 2, 0)
    return img[..., 0] if img.shape[2] == 1 else img.astype(np.uint8)


def plot_preprocessing(reference: Any, deployed: Any, spec: Any, path: str | os.PathLike, *, title: str = "") -> None:
    """Reference vs deployed model input, de-normalised, side by side, with a difference heat-map."""
    import numpy as np

    plt = _pyplot()
    ref, got = _denormalize(reference, spec), _denormalize(deployed, spec)
    diff = np.abs(np.asarray(reference, np.float64) - np.asarray(deployed, np.float64)).max(axis=0)
    scale = 255.0
    for step in spec.steps:
        if step.op == "normalize":
            scale = 255.0 * float(np.min(step.params["std"]))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    axes[0].imshow(ref, cmap="gray" if ref.ndim == 2 else None)
    axes[0].set_title("reference (training transform)")
    axes[1].imshow(got, cmap="gray" if got.ndim == 2 else None)
    axes[1].set_title("deployed (edgeinfer)")
    im = axes[2].imshow(diff * scale, cmap="magma")
    axes[2].set_title(f"|difference|, levels of 255 (max {diff.max() * scale:.1f})")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_input_histograms(batch: Any, path: str | os.PathLike) -> None:
    """Per-channel histograms of the model inputs (N, C, H, W)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = ["R", "G", "B"] if batch.shape[1] == 3 else [f"channel {c}" for c in range(batch.shape[1])]
    colors = ["tab:red", "tab:green", "tab:blue"]
    for c in range(batch.shape[1]):
        ax.hist(batch[:, c].ravel(), bins=100, histtype="step", label=names[c], color=colors[c % 3])
    ax.set(title="Model input values per channel", xlabel="value", ylabel="count")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confidence(probs: Any, path: str | os.PathLike) -> None:
    """Histogram of top-1 confidence over images."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(probs.max(axis=1), bins=20, range=(0, 1), color="tab:purple")
    ax.set(title=f"Top-1 confidence over {len(probs)} images", xlabel="probability of the predicted class",
           ylabel="images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_class_distribution(probs: Any, labels: Any, path: str | os.PathLike) -> None:
    """How often each class is predicted (a collapsed model shows one bar)."""
    import numpy as np

    plt = _pyplot()
    counts = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
    order = np.argsort(-counts)[:30]
    names = [labels[i] if labels else str(i) for i in order]
    fig, ax = plt.subplots(figsize=(max(6, len(order) * 0.35), 4))
    ax.bar(range(len(order)), counts[order], color="tab:orange")
    ax.set_xticks(range(len(order)), names, rotation=60, ha="right", fontsize=8)
    ax.set(title="Predicted classes", ylabel="images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_parity(reference: Any, deployed: Any, path: str | os.PathLike) -> None:
    """Scatter of reference vs deployed scores (every class of every image); the diagonal is parity."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(np.ravel(reference), np.ravel(deployed), s=4, alpha=0.5)
    ax.plot([0, 1], [0, 1], color="gray", lw=1)
    diff = float(np.max(np.abs(np.asarray(reference) - np.asarray(deployed))))
    ax.set(title=f"Parity with torch (max |dp| {diff:.1e})", xlabel="torch probability",
           ylabel="edgeinfer probability", xlim=(0, 1), ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fleet_colors(result: Any, rows: Any) -> list[str]:
    flagged = {(o.device, o.model, o.candidate) for o in result.outliers if o.kind == "parity"}
    return ["tab:red" if (r["device"], r["model"], r.get("candidate")) in flagged else "tab:blue" for r in rows]


def plot_fleet_latency(result: Any, path: str | os.PathLike) -> None:
    """Latency per device and model (the smallest batch of each benchmark): p50 bars, p90 ticks, whiskers to
    p99, and the throughput beside them."""
    plt = _pyplot()
    smallest: dict[tuple[str, str], Any] = {}
    for r in result.latency:
        key = (r["device"], r["model"])
        if key not in smallest or r["batch"] < smallest[key]["batch"]:
            smallest[key] = r
    rows = list(smallest.values())
    names = [f"{r['device']}\n{r['model']} (batch {r['batch']})" for r in rows]
    y = list(range(len(rows)))
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.0 + 0.55 * len(rows)), sharey=True)
    p50 = [r["p50"] for r in rows]
    axes[0].barh(y, p50, color="tab:blue", alpha=0.8, label="p50")
    axes[0].errorbar(p50, y, xerr=[[0] * len(rows), [r["p99"] - r["p50"] for r in rows]], fmt="none",
                     ecolor="black", capsize=3, label="to p99")
    axes[0].scatter([r["p90"] for r in rows], y, marker="|", s=200, color="black", label="p90")
    axes[0].set(title="Latency per call (ms)", xlabel="ms")
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8)
    axes[1].barh(y, [r["throughput_ips"] for r in rows], color="tab:green", alpha=0.8)
    axes[1].set(title="Throughput (images / s)", xlabel="images / s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_fleet_agreement(result: Any, path: str | os.PathLike) -> None:
    """Agreement with the reference per device and model: top-1 agreement and the largest probability
    difference (log scale); parity outliers (edgeinfer.tools.fleet) in red."""
    plt = _pyplot()
    rows = list(result.agreement)
    names = [f"{r['device']}\n{r['model']} ({r['candidate']})" for r in rows]
    y = list(range(len(rows)))
    colors = _fleet_colors(result, rows)
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.0 + 0.55 * len(rows)), sharey=True)
    axes[0].barh(y, [100 * r["top1_agreement"] for r in rows], color=colors)
    axes[0].set(title="Top-1 agreement with the reference (%)", xlabel="% of images", xlim=(0, 100))
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    axes[1].barh(y, [max(r["max_abs_diff"], 1e-9) for r in rows], color=colors)
    axes[1].set_xscale("log")
    axes[1].set(title="Largest |probability difference|", xlabel="max |dp| (log)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
