"""What every figure shares (style, atomic saving) and the figure of every run: cross-entropy per position.

The figures of one kind of run live with their analysis (`comparisons.analyses`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from toolkit.dims import POSITION, PREDICTOR, SCENARIO  # noqa: E402
from toolkit.kinds import kind_of  # noqa: E402

STYLE = {
    "bayes": dict(color="black", lw=2),
    "oracle": dict(color="tab:gray", ls=":"),
    "best_mixture": dict(color="tab:green", ls="--"),
    "frequency": dict(color="tab:purple", ls="-.", lw=1),
    "learner": dict(color="tab:red", lw=1.5),
}


def style(name: str) -> dict:
    """Line style of predictor ``name`` (Bayes black, the learner red, ...)."""
    return STYLE.get(name, dict(lw=1.2))


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` to ``path`` atomically (a temporary file, then a rename) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def scenario_panels(scenarios: list) -> tuple:
    """A figure with one panel per scenario, three to a row: ``(fig, axes)`` with ``axes`` flat."""
    cols = min(3, len(scenarios))
    rows = int(np.ceil(len(scenarios) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharex=True)
    for ax in list(axes.flat)[len(scenarios):]:
        ax.axis("off")
    return fig, list(axes.flat)


def cross_entropy_figure(ds: xr.Dataset, metrics: xr.Dataset, path: Path) -> Path:
    """One panel per scenario: cross-entropy against position for every predictor, H(q) as a line."""
    scenarios = list(metrics[SCENARIO].values)
    fig, axes = scenario_panels(scenarios)
    entropy = kind_of(ds).source_entropy(ds)
    for ax, scenario in zip(axes, scenarios):
        m = metrics.sel({SCENARIO: scenario})
        pos = m[POSITION].values
        for name in metrics[PREDICTOR].values:
            if name == "oracle":
                continue
            ce = m["cross_entropy"].sel({PREDICTOR: name})
            if np.all(np.isnan(ce)):
                continue
            ax.plot(pos, ce, label=name, **style(str(name)))
            ax.fill_between(
                pos, m["cross_entropy_low"].sel({PREDICTOR: name}), m["cross_entropy_high"].sel({PREDICTOR: name}),
                alpha=0.15, color=style(str(name)).get("color"),
            )
        if entropy is not None:
            h = entropy.sel({SCENARIO: scenario})
            ax.plot(pos, h, color="tab:blue", lw=1, ls=":", label="H(q) (oracle)")
        ax.set_title(str(scenario), fontsize=10)
        ax.set_xscale("log")
        ax.set_xlabel("position t")
        ax.set_ylabel("cross-entropy (nats)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Cross-entropy of y_t given y_<t, mean over episodes (95% bootstrap band)")
    return save_figure(fig, path)


__all__ = ["cross_entropy_figure", "scenario_panels", "save_figure", "style", "STYLE", "plt"]
