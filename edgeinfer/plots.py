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
