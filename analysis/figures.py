"""Figures 2-5 of the paper as PNG and PDF: models on the x axis, methods as grouped bars with
bootstrap 95% CI error bars (matplotlib, Agg backend; no display needed).

- Figure 2: prompt-style robustness (mismatch, JS distance) with the text method's noise floor;
- Figure 3: selection bias (mismatch, JS distance);
- Figure 4: value-action correlation (Pearson, Spearman), "n.s." over bars with p >= 0.05;
- Figure 5: alignment improvement with the country prompt.
Each function takes plain nested dicts (model -> method -> Estimate or Correlation) and writes
<out_dir>/<stem>.png and .pdf atomically. With no data a figure still appears, saying why.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from valueprobe_jax import io
from valueprobe_jax.analysis.metrics import Correlation, Estimate  # noqa: E402
from valueprobe_jax.vocabulary import METHODS  # noqa: E402

METHOD_LABEL = {"token": "Token", "seq": "Seq", "text": "Text"}
METHOD_COLOR = {"token": "#4C72B0", "seq": "#DD8452", "text": "#55A868"}
FIGURE_STEMS = {2: "fig2_prompt_robustness", 3: "fig3_selection_bias",
                4: "fig4_value_action", 5: "fig5_alignment_improvement"}


def _save(fig, out_dir: pathlib.Path, stem: str) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("png", "pdf"):
        paths.append(io.save_figure(fig, out_dir / f"{stem}.{fmt}", dpi=150, bbox_inches="tight"))
    plt.close(fig)
    return paths


def _value(x) -> tuple[float, float, float]:
    """(value, lo, hi) of an Estimate or Correlation; NaN where missing."""
    if isinstance(x, Estimate):
        return x.value, x.lo, x.hi
    if isinstance(x, Correlation) and x.r is not None:
        return x.r, x.lo, x.hi
    return np.nan, np.nan, np.nan


def grouped_bars(ax, models: Sequence[str], data: Mapping[str, Mapping[str, object]],
                 ylabel: str, *, p_marks: bool = False) -> dict[str, np.ndarray]:
    """Bars per model (x) and method (group) with CI error bars; returns each method's x
    positions."""
    methods = [m for m in METHODS if any(m in data.get(x, {}) for x in models)]
    x = np.arange(len(models))
    width = 0.8 / max(len(methods), 1)
    positions = {}
    for i, method in enumerate(methods):
        vals = np.array([_value(data.get(m, {}).get(method)) for m in models], dtype=float)
        v, lo, hi = vals[:, 0], vals[:, 1], vals[:, 2]
        err = np.vstack([np.where(np.isfinite(lo), v - lo, 0),
                         np.where(np.isfinite(hi), hi - v, 0)])
        pos = x + (i - (len(methods) - 1) / 2) * width
        ax.bar(pos, np.nan_to_num(v), width, yerr=np.clip(err, 0, None), capsize=3,
               label=METHOD_LABEL[method], color=METHOD_COLOR[method], ecolor="black")
        positions[method] = pos
        if p_marks:
            for j, m in enumerate(models):
                c = data.get(m, {}).get(method)
                if isinstance(c, Correlation) and c.p is not None and c.p >= 0.05:
                    top = max(v[j], hi[j] if np.isfinite(hi[j]) else v[j], 0)
                    ax.text(pos[j], top, "n.s.", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(models, rotation=20, ha="right")
    ax.set_xlabel("Model")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return positions


def _legend(ax, title: str = "Method") -> None:
    ax.legend(title=title, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _new(n_models: int, rows: int = 1, cols: int = 1):
    w = max(6.0, 1.3 * n_models + 2.5) * cols
    fig, axes = plt.subplots(rows, cols, figsize=(w, 3.6 * rows), squeeze=False)
    return fig, axes.ravel()


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _pair_figure(models, mismatch, js, title, floor=None):
    fig, (ax1, ax2) = _new(len(models), rows=2)
    grouped_bars(ax1, models, mismatch, "Mismatch rate")
    pos = grouped_bars(ax2, models, js, "JS distance")
    if floor and "text" in pos:
        ys = [floor[m].value if m in floor else np.nan for m in models]
        ax2.scatter(pos["text"], ys, marker="_", s=500, linewidths=2.5, color="crimson", zorder=5,
                    label="Text noise floor\n(N samples)")
    ax1.set_title(title)
    _legend(ax1)
    _legend(ax2)
    fig.tight_layout()
    return fig


def figure_prompt_robustness(out_dir, models: Sequence[str], mismatch, js, floor=None,
                             variant: str = "baseline") -> list[pathlib.Path]:
    """Figure 2: mismatch and JS distance between prompt styles (one option variant)."""
    if not models:
        fig, (ax,) = _new(1)
        _empty(ax, "No no-country probe rows with >= 2 prompt styles in the results")
    else:
        fig = _pair_figure(models, mismatch, js,
                           f"Prompt-style robustness (pairwise over styles, variant: {variant})",
                           floor)
    return _save(fig, io.output_path(out_dir), FIGURE_STEMS[2])


def figure_selection_bias(out_dir, models: Sequence[str], mismatch, js,
                          variants: Sequence[str] = ()) -> list[pathlib.Path]:
    """Figure 3: mismatch and JS distance between option variants (style-averaged)."""
    if not models:
        fig, (ax,) = _new(1)
        _empty(ax, "No no-country probe rows with >= 2 option variants in the results")
    else:
        fig = _pair_figure(models, mismatch, js,
                           "Selection bias (pairwise over variants: " + ", ".join(variants) + ")")
    return _save(fig, io.output_path(out_dir), FIGURE_STEMS[3])


def figure_value_action(out_dir, models: Sequence[str], pearson, spearman,
                        rating: str = "text") -> list[pathlib.Path]:
    """Figure 4: correlation of each action's end-of-scale weight with the model's rating."""
    if not models:
        fig, (ax,) = _new(1)
        _empty(ax, "No action_agreement rows (or no matching value probes) in the results")
    else:
        fig, (ax1, ax2) = _new(len(models), cols=2)
        grouped_bars(ax1, models, pearson, "Pearson r", p_marks=True)
        grouped_bars(ax2, models, spearman, "Spearman rho", p_marks=True)
        ax1.set_title(f"Value-action agreement, Pearson ({rating} ratings)")
        ax2.set_title(f"Value-action agreement, Spearman ({rating} ratings)")
        for ax in (ax1, ax2):
            ax.axhline(0, color="black", linewidth=0.8)
        _legend(ax2, "Method\n(n.s.: p >= 0.05)")
        fig.tight_layout()
    return _save(fig, io.output_path(out_dir), FIGURE_STEMS[4])


def figure_alignment(out_dir, models: Sequence[str], improvement,
                     message: str = "",
                     ylabel: str = "Alignment improvement (1 - EMD/(k-1))") -> list[pathlib.Path]:
    """Figure 5: alignment improvement (with minus without the country prompt); ``ylabel``
    names the unit (the paper plotted EMD without - EMD with)."""
    fig, (ax,) = _new(max(len(models), 1))
    if not models:
        _empty(ax, message or "No demographic rows with human distributions to compare")
    else:
        grouped_bars(ax, models, improvement, ylabel)
        ax.axhline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title("Alignment with WVS-7 answers: country prompt minus none")
        _legend(ax)
        fig.tight_layout()
    return _save(fig, io.output_path(out_dir), FIGURE_STEMS[5])
