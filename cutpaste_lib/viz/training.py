"""Figures for self-supervised training: loss/accuracy curves, the learning-rate schedule, confusion.

Example:
    >>> from cutpaste_lib.train import TrainConfig, lr_schedule
    >>> from cutpaste_lib.viz.training import plot_lr_schedule
    >>> fig = plot_lr_schedule(lr_schedule(TrainConfig()))
"""

from __future__ import annotations

import numpy as np

from cutpaste_lib.viz.common import plt

CLASS_NAMES = {2: ("normal", "augmented"), 3: ("normal", "CutPaste", "Scar")}


def plot_history(
    history: dict[str, list], *, title: str = "", chance: float | None = None
) -> plt.Figure:
    """Training loss and proxy accuracy against the update step (one point per log interval).

    Args:
        history: :attr:`cutpaste_lib.train.TrainResult.history` (keys step, loss, accuracy).
        title: figure title.
        chance: draw the chance accuracy (1/3 for 3-way, 1/2 binary) and the loss log(C).
    """
    steps = np.asarray(history["step"])
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(steps, history["loss"], marker=".", color="tab:blue")
    ax_loss.set(xlabel="update step", ylabel="cross-entropy", title="proxy-task loss")
    ax_acc.plot(steps, history["accuracy"], marker=".", color="tab:green")
    ax_acc.set(xlabel="update step", ylabel="accuracy", title="proxy-task accuracy", ylim=(0, 1.02))
    if chance is not None:
        ax_acc.axhline(chance, ls="--", color="grey", lw=1, label=f"chance {chance:.2f}")
        ax_loss.axhline(
            -np.log(chance), ls="--", color="grey", lw=1, label=f"log {round(1 / chance)}"
        )
        ax_acc.legend(loc="lower right")
        ax_loss.legend(loc="upper right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_lr_schedule(
    schedule: np.ndarray, *, title: str = "learning rate per update"
) -> plt.Figure:
    """The precomputed learning rate of every step (one cosine cycle in the paper)."""
    schedule = np.asarray(schedule)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(np.arange(len(schedule)), schedule, color="tab:orange")
    ax.set(xlabel="update step", ylabel="lr", title=title, ylim=(0, None))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_confusion(
    matrix: np.ndarray, *, class_names: tuple[str, ...] | None = None, title: str = "proxy task"
) -> plt.Figure:
    """Row-normalised confusion matrix (true class in rows), with the counts in each cell."""
    matrix = np.asarray(matrix)
    names = class_names or CLASS_NAMES.get(len(matrix), tuple(str(i) for i in range(len(matrix))))
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.3 * len(matrix) + 1.6, 1.2 * len(matrix) + 1))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(matrix)):
        for j in range(len(matrix)):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}\n({matrix[i, j]})",
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.6 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
