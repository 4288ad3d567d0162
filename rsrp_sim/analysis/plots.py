"""Figures in the form of the paper's: learning curves, comparisons over seeds, p histograms.

Everything draws with matplotlib's Agg back-end into PNG files; nothing needs a display.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from ..infra.records import NOT_WRITABLE, atomic_write_bytes, writing

__all__ = ["X_LABELS", "learning_curve", "p_histogram", "band", "compare", "confusion_matrix", "raster",
           "weight_histogram", "weight_grid", "assignment_histogram", "TRIAL_STYLE", "sweep_objective", "sweep_params",
           "FIGURES", "draw"]

X_LABELS = {
    "iteration": "generation / iteration",
    "env_steps": "environment steps",
    "examples": "training examples",
    "wall_s": "wall-clock time (s)",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _folder(path: Path) -> None:
    with writing(path.parent, NOT_WRITABLE):
        path.parent.mkdir(parents=True, exist_ok=True)


def _save(fig: Any, path: Path) -> None:
    """The figure as PNG, written atomically (never a torn file; the records' file mode)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    atomic_write_bytes(path, buf.getvalue(), NOT_WRITABLE)


def _column(rows, key):
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def learning_curve(rows: Sequence[dict[str, Any]], path: Any, title: str, threshold: float | None = None,
                   score_label: str = "episode return", steps_field: str = "env_steps",
                   labels: tuple[str, str] = ("train (population mean)", "eval (deterministic network)")) -> Any:
    """Train and eval score against iteration and against env steps (two panels)."""
    plt = _plt()
    path = Path(path)
    _folder(path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, xkey in zip(axes, ("iteration", steps_field)):
        x = _column(rows, xkey)
        for key, style in (("train_score", dict(color="tab:blue", alpha=0.8, label=labels[0])),
                           ("eval_score", dict(color="tab:red", lw=2, label=labels[1]))):
            y = _column(rows, key)
            ok = np.isfinite(y)  # e.g. an eval score recorded only every k iterations
            if ok.any():
                ax.plot(x[ok], y[ok], **style)
        if threshold is not None:
            ax.axhline(threshold, color="gray", ls="--", lw=1, label=f"solved ({threshold:g})")
        ax.set_xlabel(X_LABELS.get(xkey, xkey))
        ax.set_ylabel(score_label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
    return path


def p_histogram(p: dict[str, np.ndarray], path: Any, title: str = "release probabilities p") -> Any:
    """Histogram of every mask's release probabilities."""
    plt = _plt()
    path = Path(path)
    _folder(path)
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    bins = np.linspace(0, 1, 41)
    for name, v in p.items():
        ax.hist(np.ravel(v), bins=bins, histtype="step", lw=1.5, density=True, label=f"{name} ({np.size(v)})")
    ax.set_xlabel("release probability p")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def band(curves: list[tuple[np.ndarray, np.ndarray]], n_points: int = 200) -> Any:
    """Mean and spread (min..max, and std) of several (x, y) curves on a common x grid.

    Curves are interpolated on the overlap of their x ranges; returns ``(x, mean, std, lo, hi)``.
    """
    curves = [(x[np.isfinite(y)], y[np.isfinite(y)]) for x, y in curves]
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return (np.array([]),) * 5
    if len(curves) == 1:
        x, y = curves[0]
        return x, y, np.zeros_like(y), y, y
    lo_x = max(c[0][0] for c in curves)
    hi_x = min(c[0][-1] for c in curves)
    if hi_x <= lo_x:
        hi_x = max(c[0][-1] for c in curves)
    grid = np.linspace(lo_x, hi_x, n_points) if hi_x > lo_x else np.array([lo_x])
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.std(0), ys.min(0), ys.max(0)


def compare(groups: dict[str, list[list[dict[str, Any]]]], path: Any,
            x_keys: Any = ("iteration", "env_steps", "wall_s"),
            y_key: str = "eval_score", title: str = "", threshold: float | None = None,
            score_label: str = "eval return") -> Any:
    """Overlay groups of runs (label -> runs' metric rows): mean line and min-max band over seeds."""
    plt = _plt()
    path = Path(path)
    _folder(path)
    fig, axes = plt.subplots(1, len(x_keys), figsize=(5.2 * len(x_keys), 4.2), constrained_layout=True,
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, xkey in zip(axes[0], x_keys):
        for i, (label, runs) in enumerate(groups.items()):
            curves = [(_column(r, xkey), _column(r, y_key)) for r in runs if r]
            x, mean, _, lo, hi = band(curves)
            if not len(x):
                continue
            c = colors[i % len(colors)]
            if len(x) <= 3:  # evaluated only a few times (e.g. at the end): points with min..max bars
                ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="o-", color=c, lw=2, ms=6, capsize=4,
                            label=f"{label} (n={len(curves)})")
                continue
            ax.plot(x, mean, color=c, lw=2, label=f"{label} (n={len(curves)})")
            if len(curves) > 1:
                ax.fill_between(x, lo, hi, color=c, alpha=0.2)
        if threshold is not None:
            ax.axhline(threshold, color="gray", ls="--", lw=1)
        if xkey in ("env_steps", "examples", "wall_s"):
            ax.set_xscale("log")
        ax.set_xlabel(X_LABELS.get(xkey, xkey))
        ax.set_ylabel(score_label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
    return path


def confusion_matrix(counts: Any, path: Any, title: str = "confusion matrix",
                     class_names: Sequence[str] | None = None) -> Any:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with the counts written in."""
    plt = _plt()
    path = Path(path)
    _folder(path)
    counts = np.asarray(counts)
    n = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), constrained_layout=True)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} (accuracy {acc:.4f}, n={int(counts.sum())})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    _save(fig, path)
    plt.close(fig)
    return path


def raster(times: Any, gids: Any, groups: dict[str, Sequence[int]], path: Any, title: str = "spike raster") -> Any:
    """Spike raster: ``times`` (ms) and ``gids`` of every spike, cells grouped and coloured by population.

    ``groups`` maps a population name to its cells' ids; rows follow the order of ``groups``.
    """
    plt = _plt()
    path = Path(path)
    _folder(path)
    times, gids = np.asarray(times, dtype=float), np.asarray(gids, dtype=np.int64)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(10, 5), constrained_layout=True)
    row, ticks = 0, []
    for i, (name, ids) in enumerate(groups.items()):
        ids = np.asarray(ids, dtype=np.int64)  # type: ignore[assignment]
        rows = {int(g): row + k for k, g in enumerate(ids)}
        sel = np.isin(gids, ids)
        y = np.array([rows[int(g)] for g in gids[sel]])
        ax.scatter(times[sel], y, s=2, color=colors[i % len(colors)], marker="|", linewidths=0.8)
        ticks.append((row + len(ids) / 2, name))
        row += len(ids)
    ax.set_yticks([t for t, _ in ticks], [n for _, n in ticks])
    ax.set_ylim(-0.5, row - 0.5)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)
    return path


def weight_histogram(groups: dict[str, tuple[np.ndarray, np.ndarray]], path: Any,
                     title: str = "synaptic weights") -> Any:
    """One panel per group of synapses: histogram of the initial and the final weights."""
    plt = _plt()
    path = Path(path)
    _folder(path)
    n = max(len(groups), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), constrained_layout=True, squeeze=False)
    for ax, (name, (before, after)) in zip(axes[0], groups.items()):
        both = np.concatenate([np.ravel(before), np.ravel(after)])
        bins = np.linspace(both.min(), both.max() + 1e-9, 41) if both.size else 10
        ax.hist(np.ravel(before), bins=bins, histtype="step", lw=1.5, label="initial")
        ax.hist(np.ravel(after), bins=bins, histtype="stepfilled", alpha=0.5, label="final")
        ax.set_title(f"{name} ({np.size(after)})", fontsize=9)
        ax.set_xlabel("weight")
    axes[0][0].set_ylabel("synapses")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
    return path


def weight_grid(weights: Any, path: Any, title: str = "receptive fields", labels: Sequence[int] | None = None) -> Any:
    """Input weights of many neurons as a grid of images (``weights``: (n, H, W)), each neuron's own
    colour scale from 0 to its largest weight; ``labels`` (optional) are written in each tile's corner."""
    plt = _plt()
    path = Path(path)
    _folder(path)
    w = np.asarray(weights, dtype=float)
    n, hgt, wid = w.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (hgt + 1) - 1, cols * (wid + 1) - 1), np.nan)
    for k in range(n):
        r, c = divmod(k, cols)
        top = w[k].max()
        canvas[r * (hgt + 1):r * (hgt + 1) + hgt, c * (wid + 1):c * (wid + 1) + wid] = w[k] / top if top > 0 else 0
    size = min(14.0, 1.5 + 0.45 * cols * max(wid, 8) / 8)
    fig, ax = plt.subplots(figsize=(size, size * rows / cols + 0.6), constrained_layout=True)
    cmap = plt.get_cmap("hot_r").with_extremes(bad="lightgray")
    ax.imshow(canvas, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    if labels is not None and cols <= 40:
        for k, lab in enumerate(labels):
            r, c = divmod(k, cols)
            ax.text(c * (wid + 1), r * (hgt + 1), "-" if lab < 0 else str(int(lab)), fontsize=5, color="tab:blue",
                    va="top", ha="left")
    ax.set_axis_off()
    ax.set_title(f"{title} (each tile scaled to its largest weight)", fontsize=9)
    _save(fig, path)
    plt.close(fig)
    return path


def assignment_histogram(assignments: Any, n_classes: int, path: Any, title: str = "neuron labels") -> Any:
    """Number of neurons labelled with each class (and unlabelled ones, -1, as 'none')."""
    plt = _plt()
    path = Path(path)
    _folder(path)
    a = np.asarray(assignments, dtype=np.int64)
    counts = np.bincount(a[a >= 0], minlength=n_classes)[:n_classes]
    none = int((a < 0).sum())
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    ax.bar(range(n_classes), counts, color="tab:blue")
    if none:
        ax.bar([n_classes], [none], color="tab:gray")
    ax.set_xticks(list(range(n_classes)) + ([n_classes] if none else []),
                  [str(i) for i in range(n_classes)] + (["none"] if none else []))
    ax.set_xlabel("assigned class")
    ax.set_ylabel("neurons")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return path


def _trial_marks(trials):
    """Finished trials with a value, split by state: ``{state: (numbers, values)}``."""
    out = {}
    for t in trials:
        v = t.get("value")
        if v is None or not np.isfinite(float(v)):
            continue
        nums, vals = out.setdefault(t.get("state", "COMPLETE"), ([], []))
        nums.append(int(t["trial"]))
        vals.append(float(v))
    return out


TRIAL_STYLE = {"COMPLETE": dict(color="tab:blue", marker="o", label="complete"),
               "PRUNED": dict(color="tab:gray", marker="x", label="pruned (last value)")}


def sweep_objective(trials: Sequence[dict[str, Any]], path: Any, objective: str, direction: str = "maximize",
                    title: str = "") -> Any:
    """Objective of every trial against its number, and the best value so far (complete trials).

    ``trials``: dicts with ``trial`` (number), ``state`` (``COMPLETE``, ``PRUNED`` ...) and ``value``.
    """
    plt = _plt()
    path = Path(path)
    _folder(path)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    marks = _trial_marks(trials)
    for state, (nums, vals) in marks.items():
        style = TRIAL_STYLE.get(state, dict(color="tab:red", marker="s", label=state.lower()))
        ax.scatter(nums, vals, s=28, zorder=3, **style)
    if "COMPLETE" in marks:
        nums, vals = (np.asarray(a, float) for a in marks["COMPLETE"])
        order = np.argsort(nums)
        best = (np.maximum if direction == "maximize" else np.minimum).accumulate(vals[order])
        ax.step(nums[order], best, where="post", color="tab:red", lw=1.5, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or f"{objective} per trial", fontsize=10)
    _save(fig, path)
    plt.close(fig)
    return path


def sweep_params(trials: Sequence[dict[str, Any]], keys: Sequence[str], path: Any, objective: str,
                 log_keys: Sequence[str] = (), title: str = "") -> Any:
    """One panel per swept key: the objective of every trial against that key's value
    (``trials``: dicts with ``trial``, ``state``, ``value`` and ``params``; categorical values of
    any type are spread over the x axis in their order of first appearance)."""
    plt = _plt()
    path = Path(path)
    _folder(path)
    n = max(len(keys), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [t["params"].get(key) for t in trials if t.get("params")]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None)
        cats = list(dict.fromkeys(v for v in values if v is not None)) if not numeric else []
        for state, style in (("COMPLETE", TRIAL_STYLE["COMPLETE"]), ("PRUNED", TRIAL_STYLE["PRUNED"])):
            sel = [t for t in trials if t.get("state") == state and t.get("value") is not None
                   and np.isfinite(float(t["value"])) and t.get("params", {}).get(key) is not None]
            if not sel:
                continue
            x = [t["params"][key] for t in sel]
            x = [float(v) for v in x] if numeric else [cats.index(v) for v in x]
            ax.scatter(x, [float(t["value"]) for t in sel], s=28, zorder=3, **style)
        if cats:
            ax.set_xticks(range(len(cats)), [str(c) for c in cats])
            ax.set_xlim(-0.5, len(cats) - 0.5)
        elif key in log_keys:
            from matplotlib.ticker import FuncFormatter, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(objective)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(title or f"{objective} against each swept key", fontsize=10)
    _save(fig, path)
    plt.close(fig)
    return path


#: the figures a method may ask for (:class:`rsrp_sim.engine.method.Figure` kinds)
FIGURES = {f.__name__: f for f in (p_histogram, confusion_matrix, raster, weight_histogram, weight_grid,
                                    assignment_histogram)}


def draw(figure: Any, folder: Any) -> Path:
    """Draw a method's :class:`~rsrp_sim.engine.method.Figure` into ``folder``; returns the file."""
    if figure.kind not in FIGURES:
        raise ValueError(f"unknown figure kind {figure.kind!r}; allowed: {', '.join(FIGURES)}")
    path = Path(folder) / figure.file
    FIGURES[figure.kind](path=path, **figure.data)
    return path
