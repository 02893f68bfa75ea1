"""The bench's figure: seconds per prompt of each strategy against the number of options and
against prompt length (``valueprobe bench --plot``), written through ``io.save_figure``."""

from __future__ import annotations

from typing import Any

from valueprobe_jax import io


def plot(result: dict[str, Any], path: str) -> None:
    """Draw ``result["groups"]`` (``run_bench`` with ``groups``) to the PNG ``path``."""
    # matplotlib is optional and slow to import, and the Agg backend must be chosen before
    # pyplot loads: imported only when a plot is drawn
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, by, label in ((axes[0], "options", "number of options"),
                          (axes[1], "prompt_tokens", "prompt length (tokens, quartile mean)")):
        for strategy in result["strategy_names"]:
            pts = sorted((g["x"], g["s_per_prompt"]) for g in result["groups"]
                         if g["by"] == by and g["strategy"] == strategy)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=strategy)
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per prompt")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"option scoring on {result['model']} ({result['machine']['cpu']}, "
                 f"{result['machine']['cores']} cores)", fontsize=9)
    fig.tight_layout()
    io.save_figure(fig, path, dpi=120)
    plt.close(fig)


__all__ = ["plot"]
