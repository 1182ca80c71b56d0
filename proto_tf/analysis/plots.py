"""Plots of the evaluation curves (matplotlib, headless): a 300 dpi PNG and, beside it,
a vector PDF with embedded TrueType fonts (venues refuse Type 3 fonts)."""

import os

import matplotlib

matplotlib.use("Agg")  # No display on servers and CI.
import matplotlib.pyplot as plt  # noqa: E402

# Paper-ready output: fonts embedded as TrueType (Type 42) in PDF and PostScript.
PAPER_STYLE = {"pdf.fonttype": 42, "ps.fonttype": 42}
PNG_DPI = 300


def save_figure(figure, path: str, dpi: int = PNG_DPI) -> tuple[str, str]:
    """Writes `figure` as `path` (PNG at `dpi`) and as a PDF beside it; closes it.
    Returns both paths."""
    vector = os.path.splitext(path)[0] + ".pdf"
    with matplotlib.rc_context(PAPER_STYLE):
        figure.savefig(path, dpi=dpi)
        figure.savefig(vector)
    plt.close(figure)
    return path, vector


def plot_coverage(curves, path, title="Accuracy against the share of predictions made"):
    """Fig. 6: one line per `{label: coverage_curve}`; x = share kept, y = accuracy."""
    figure, axes = plt.subplots(figsize=(5, 4))
    for label, curve in curves.items():
        points = [(c["kept"], c["accuracy"]) for c in curve if c["accuracy"] is not None]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.invert_xaxis()
    return _save(figure, axes, "share of test samples predicted", "accuracy", title, path)


def plot_shift(shares, levels, path, title="Share of samples above each confidence level"):
    """Fig. 8: one line per `{set name: shares}` against the confidence level."""
    figure, axes = plt.subplots(figsize=(5, 4))
    for label, values in shares.items():
        axes.plot(levels, values, marker="o", label=label)
    return _save(figure, axes, "confidence level", "share of samples above the level", title, path)


def _save(figure, axes, xlabel, ylabel, title, path):
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return save_figure(figure, path)[0]


def plot_budget_gap(gaps, path, title="Gap to the baseline against the budget"):
    """One line per row of `comparison.budget_gaps` (gap in points against the share of
    the paper's steps), with the paper's own gap at share 1 as an open square."""
    figure, axes = plt.subplots(figsize=(5.5, 4))
    for label, entry in gaps.items():
        points = entry["points"]
        line = axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)[0]
        if entry["paper_gap"] is not None:
            axes.plot([1.0], [entry["paper_gap"]], marker="s", fillstyle="none", color=line.get_color())
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    return _save(
        figure,
        axes,
        "share of the paper's training steps (□: the paper)",
        "test accuracy − baseline (points)",
        title,
        path,
    )


def plot_agreement(own_label_mass, path: str) -> str:
    """Histogram of each training example's attention weight on its own label."""
    figure, axes = plt.subplots(figsize=(5, 4))
    axes.hist(own_label_mass, bins=40, range=(0.0, 1.0))
    axes.set_yscale("log")
    axes.set_xlabel("attention weight on prototypes of the example's own label")
    axes.set_ylabel("training examples")
    axes.set_title("Label audit: low agreement = suspect label")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)[0]
