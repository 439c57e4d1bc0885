"""The outputs of ``satclip bench`` beside its results: a Markdown summary (mean ± std over seeds)
and one plot (score against label budget, a line per encoder, a panel per task)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..outputs import written_whole
from .bench_config import BenchConfig

METRIC_LABEL = {"r2": "R²", "accuracy": "accuracy"}


def budget_label(budget: int | None) -> str:
    return "all" if budget is None else str(budget)


def aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 0) of the score and the mean training size, over seeds, per (task, protocol, encoder, probe, budget)."""
    keys = ["task", "protocol", "encoder", "probe", "budget", "metric"]
    grouped = results.groupby(keys, sort=False)
    return grouped.agg(mean=("score", "mean"), std=("score", lambda s: float(np.std(s))), seeds=("seed", "nunique"), n_train=("n_train", "mean")).reset_index()


def summary_markdown(results: pd.DataFrame, config: BenchConfig) -> str:
    """One table per (task, protocol): a row per (encoder, probe), a column per label budget."""
    stats = aggregate(results).set_index(["task", "protocol", "encoder", "probe", "budget"])
    budgets = [budget_label(b) for b in config.budgets]
    lines = [f"Mean ± std over {config.seeds} seed(s); R² for regression, accuracy for classification; (n) = mean training rows.", ""]
    for task in config.tasks:
        for protocol in config.protocols_of(task):
            metric = "R²" if task.task == "regression" else "accuracy"
            lines += [
                f"### {task.name}: {protocol.name} ({metric})",
                "",
                "| encoder | probe | " + " | ".join(budgets) + " |",
                "|---|---|" + "---|" * len(budgets),
            ]
            for encoder in config.encoders:
                for probe in config.probes_of(task):
                    cells = []
                    for budget in budgets:
                        key = (task.name, protocol.name, encoder.name, probe, budget)
                        if key in stats.index:
                            row = stats.loc[key]
                            cells.append(f"{row['mean']:.3f} ± {row['std']:.3f}" + (f" ({row['n_train']:.0f})" if budget == "all" else ""))
                        else:
                            cells.append("")
                    if any(cells):
                        lines.append(f"| {encoder.name} | {probe} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def plot_budgets(results: pd.DataFrame, config: BenchConfig, *, path: Path) -> None:
    """Score against training rows (log axis; 'all' at its mean size) for ``config.plot_protocol``
    and ``config.plot_probe``: a panel per task, a line per encoder, bars of ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(results[(results["protocol"] == config.plot_protocol) & (results["probe"] == config.plot_probe)])
    tasks = config.tasks
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for encoder in config.encoders:
            rows = stats[(stats["task"] == task.name) & (stats["encoder"] == encoder.name)].sort_values("n_train")
            if len(rows):
                ax.errorbar(rows["n_train"], rows["mean"], yerr=rows["std"], marker="o", markersize=3, capsize=2, label=encoder.name)
        ax.set_xscale("log")
        ax.set_xlabel("training rows (label budget)")
        ax.set_ylabel(METRIC_LABEL["r2" if task.task == "regression" else "accuracy"])
        ax.set_title(f"{task.name} ({config.plot_protocol}, {config.plot_probe})", fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4) or 1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    with written_whole(path) as partial:
        fig.savefig(partial, format="png", dpi=90)
    plt.close(fig)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` under a temporary name, then rename it into place."""
    with written_whole(path) as partial:
        partial.write_text(text)


__all__ = ["aggregate", "budget_label", "plot_budgets", "summary_markdown", "write_text"]
