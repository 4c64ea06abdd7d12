"""Figures of a comparison: cross-entropy per position, predictions along episodes, implied mixture weights."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from toolkit.dims import EPISODE, OUTCOME, POSITION, PREDICTOR, SCENARIO  # noqa: E402

STYLE = {
    "bayes": dict(color="black", lw=2),
    "oracle": dict(color="tab:gray", ls=":"),
    "best_mixture": dict(color="tab:green", ls="--"),
    "frequency": dict(color="tab:purple", ls="-.", lw=1),
    "learner": dict(color="tab:red", lw=1.5),
}


def _label(ds: xr.Dataset, outcome: int) -> str:
    """The outcome's label where the figure font can draw it (emoji labels fall back to the index)."""
    label = str(ds[OUTCOME].values[outcome])
    return label if label.isascii() else f"outcome {outcome}"


def _style(name: str) -> dict:
    return STYLE.get(name, dict(lw=1.2))


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def entropy_of_source(ds: xr.Dataset, oracle: str = "oracle") -> xr.DataArray | None:
    """H(q) per (scenario, position): the entropy of the oracle's predictive, averaged over episodes."""
    if "log_prob" not in ds or oracle not in ds[PREDICTOR].values:
        return None
    lp = ds["log_prob"].sel({PREDICTOR: oracle})
    return (-(np.exp(lp) * lp).sum(OUTCOME, skipna=False)).mean(EPISODE)


def cross_entropy_figure(ds: xr.Dataset, metrics: xr.Dataset, path: Path) -> Path:
    """One panel per scenario: cross-entropy against position for every predictor, H(q) as a line."""
    scenarios = list(metrics[SCENARIO].values)
    cols = min(3, len(scenarios))
    rows = int(np.ceil(len(scenarios) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharex=True)
    entropy = entropy_of_source(ds)
    for ax, scenario in zip(axes.flat, scenarios):
        m = metrics.sel({SCENARIO: scenario})
        pos = m[POSITION].values
        for name in metrics[PREDICTOR].values:
            if name == "oracle":
                continue
            ce = m["cross_entropy"].sel({PREDICTOR: name})
            if np.all(np.isnan(ce)):
                continue
            ax.plot(pos, ce, label=name, **_style(str(name)))
            ax.fill_between(
                pos, m["cross_entropy_low"].sel({PREDICTOR: name}), m["cross_entropy_high"].sel({PREDICTOR: name}),
                alpha=0.15, color=_style(str(name)).get("color"),
            )
        if entropy is not None:
            h = entropy.sel({SCENARIO: scenario})
            ax.plot(pos, h, color="tab:blue", lw=1, ls=":", label="H(q) (oracle)")
        ax.set_title(str(scenario), fontsize=10)
        ax.set_xscale("log")
        ax.set_xlabel("position t")
        ax.set_ylabel("cross-entropy (nats)")
    for ax in list(axes.flat)[len(scenarios):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Cross-entropy of y_t given y_<t, mean over episodes (95% bootstrap band)")
    return _save(fig, path)


def predictions_figure(ds: xr.Dataset, scenario: str, path: Path, *, num_episodes: int = 4, outcome: int = 0) -> Path:
    """P(outcome) along a few episodes of one scenario, for each predictor."""
    sub = ds.sel({SCENARIO: scenario}).isel({EPISODE: slice(0, num_episodes)})
    label = _label(ds, outcome)
    fig, axes = plt.subplots(num_episodes, 1, figsize=(8, 1.9 * num_episodes), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ep = sub.isel({EPISODE: i})
        pos = ep[POSITION].values
        for name in ds[PREDICTOR].values:
            if name in ("oracle", "frequency"):
                continue
            p = np.exp(ep["log_prob"].sel({PREDICTOR: name}).isel({OUTCOME: outcome}))
            if np.all(np.isnan(p)):
                continue
            ax.plot(pos, p, label=str(name), **_style(str(name)))
        hits = pos[ep["y"].values == outcome]
        ax.plot(hits, np.full(hits.shape, 0.02), "|", color="tab:orange", ms=6, label=f"y = {label}")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"P({label})")
    axes[0, 0].legend(fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("position t")
    fig.suptitle(f"Predictions along {num_episodes} episodes of {scenario}")
    return _save(fig, path)


def implied_weight(p: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Weight w on component 0 such that w θ0 + (1 − w) θ1 = p (two components)."""
    return (p - theta[1]) / (theta[0] - theta[1])


def mixture_weight_figure(ds: xr.Dataset, scenario: str, theta: np.ndarray, path: Path, *, learner="learner", outcome=0) -> Path:
    """The learner's implied weight on component 0 against Bayes' posterior weight, every (episode, position)."""
    sub = ds.sel({SCENARIO: scenario}).isel({OUTCOME: outcome})
    w_bayes = implied_weight(np.exp(sub["log_prob"].sel({PREDICTOR: "bayes"}).values), theta).ravel()
    w_learner = implied_weight(np.exp(sub["log_prob"].sel({PREDICTOR: learner}).values), theta).ravel()
    keep = np.isfinite(w_bayes) & np.isfinite(w_learner)
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot(w_bayes[keep], w_learner[keep], ".", ms=1.5, alpha=0.25, color="tab:red")
    ax.plot([0, 1], [0, 1], color="black", lw=1, label="learner = Bayes")
    ax.axhline(0.5, color="tab:green", ls="--", lw=1, label="best fixed mixture (1/2)")
    ax.set_xlabel("Bayes posterior weight on component 0")
    ax.set_ylabel("learner's implied weight on component 0")
    ax.set_title(f"{scenario}: implied mixture weight", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def squared_error_figure(metrics: xr.Dataset, path: Path) -> Path:
    """One panel per scenario: squared error of the predictive mean / d against the number of context examples."""
    scenarios = list(metrics[SCENARIO].values)
    cols = min(3, len(scenarios))
    rows = int(np.ceil(len(scenarios) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharex=True)
    for ax, scenario in zip(axes.flat, scenarios):
        m = metrics["squared_error"].sel({SCENARIO: scenario})
        context = m[POSITION].values - 1
        for name in metrics[PREDICTOR].values:
            err = m.sel({PREDICTOR: name})
            if np.all(np.isnan(err)):
                continue
            ax.plot(context, err, label=str(name), **_style(str(name)))
        ax.set_yscale("log")
        ax.set_title(str(scenario), fontsize=10)
        ax.set_xlabel("in-context examples (t − 1)")
        ax.set_ylabel("squared error / d")
    for ax in list(axes.flat)[len(scenarios):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Squared error of the predictive mean of y_t, divided by d, mean over episodes")
    return _save(fig, path)


def query_episodes(x_context: np.ndarray, y_context: np.ndarray, x_query: np.ndarray):
    """One episode per query point: the same context, then the query x as the last position (its y unused)."""
    from toolkit.episodes import Episodes

    n, q = len(y_context), len(x_query)
    x = np.concatenate([np.broadcast_to(x_context, (q, n, x_context.shape[-1])), x_query[:, None, :]], axis=1)
    y = np.concatenate([np.broadcast_to(y_context, (q, n)), np.zeros((q, 1))], axis=1)
    return Episodes(y=y, x=x)


def regression_band_figure(
    ds: xr.Dataset, predictors: dict, scenarios: list[str], path: Path, *, prior, scenario_objects=(),
    num_context: int = 16, num_query: int = 120,
) -> Path:
    """Bayes' Power pictures: predictive mean and 90 % band over x after ``num_context`` examples of one episode.

    For each scenario the first ``num_context`` points of episode 0 are the
    context; every predictor in ``predictors`` (e.g. Bayes, the oracle where
    the source is known, the learners) predicts y at ``num_query`` query
    points across the scenario's x range. ``scenario_objects`` bind the
    predictors that depend on the scenario (the oracle).
    """
    from toolkit.dims import QUANTILE, Y_GRID

    y_grid = ds[Y_GRID].values if Y_GRID in ds.dims else None
    by_name = {s.name: s for s in scenario_objects}
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4.6 * len(scenarios), 3.6), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        sub = ds.sel({SCENARIO: scenario}).isel({EPISODE: 0})
        n = min(num_context, sub.sizes[POSITION] - 1)
        x_ctx = sub["x"].isel({POSITION: slice(0, n)}).values  # (n, 1)
        y_ctx = sub["y"].isel({POSITION: slice(0, n)}).values
        x_all = ds["x"].sel({SCENARIO: scenario}).values
        lo, hi = np.nanmin(x_all), np.nanmax(x_all)
        x_query = np.linspace(lo, hi, num_query)[:, None]
        episodes = query_episodes(x_ctx, y_ctx, x_query)
        for name, predictor in predictors.items():
            if hasattr(predictor, "bind"):
                predictor = predictor.bind(prior, by_name.get(scenario), episodes) if scenario in by_name else None
            if predictor is None:
                continue
            pred = predictor.predict(episodes, y_grid=y_grid).isel({POSITION: -1})
            style = _style(str(name))
            ax.plot(x_query[:, 0], pred["mean"].values, label=str(name), **style)
            if "quantile_value" in pred and name != "oracle":
                q = pred["quantile_value"]
                ax.fill_between(x_query[:, 0], q.sel({QUANTILE: 0.05}).values, q.sel({QUANTILE: 0.95}).values,
                                alpha=0.15, color=style.get("color"))
        ax.plot(x_ctx[:, 0], y_ctx, "o", color="tab:orange", ms=3.5, label=f"{n} context points")
        ax.set_title(str(scenario), fontsize=10)
        ax.set_xlabel("x")
    axes[0, 0].set_ylabel("y")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Predictive mean and 90 % band over x after the context (the oracle: the source's own mean)")
    return _save(fig, path)


__all__ = ["cross_entropy_figure", "squared_error_figure", "regression_band_figure", "query_episodes", "predictions_figure", "mixture_weight_figure", "implied_weight", "entropy_of_source"]
