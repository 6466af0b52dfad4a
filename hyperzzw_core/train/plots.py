"""Plots of a training run: learning curves and the blocks' global hyper-kernels (paper Fig. 4)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: list[dict], out: str | Path) -> Path:
    """Train/slow loss and validation/test accuracy per epoch, as one PNG."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train loss (CE + slow)")
    ax1.plot(epochs, [h["slow_loss"] for h in history], label="slow loss")
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax1.set_title("losses")
    ax2.plot(epochs, [100 * h["val_acc"] for h in history], label="validation")
    ax2.plot(epochs, [100 * h["test_acc"] for h in history], label="test", linestyle="--")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    ax2.set_title("accuracy")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def kernel_images(
    kernels: Sequence[np.ndarray], grid: tuple[int, int] | None = None, channels: int = 8
) -> list[np.ndarray]:
    """Each block's K_g (1, C, H, W) or (1, C, L) as (min(C, channels), h, w) images.

    A 1D kernel is laid row-major on its grid as the global product lays it; the h·w − L padded
    positions are NaN (blank in the plot), not zero (docs/spec-1d.md).
    """
    out = []
    for k in kernels:
        k = np.asarray(k)[0]
        if k.ndim == 2:
            if grid is None:
                raise ValueError("grid: 1D kernels need the (h, w) grid to be shown as images")
            h, w = grid
            if h * w < k.shape[1]:
                raise ValueError(f"grid: {tuple(grid)} holds {h * w} positions, fewer than the kernels' {k.shape[1]}")
            k = np.concatenate([k, np.full((k.shape[0], h * w - k.shape[1]), np.nan, dtype=k.dtype)], axis=1)
            k = k.reshape(k.shape[0], h, w)
        out.append(k[:channels])
    return out


def global_kernels(
    kernels: Sequence[np.ndarray],
    out: str | Path,
    grid: tuple[int, int] | None = None,
    channels: int = 8,
    title: str = "",
) -> Path:
    """One row per block, one column per channel (the first ``channels``), shared colour scale per row."""
    plt = _pyplot()
    imgs = kernel_images(kernels, grid, channels)
    cols = max(im.shape[0] for im in imgs)
    fig, axes = plt.subplots(len(imgs), cols, figsize=(1.3 * cols + 1, 1.3 * len(imgs) + 0.6), squeeze=False)
    for r, im in enumerate(imgs):
        v = float(np.nanmax(np.abs(im))) or 1.0
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < im.shape[0]:
                ax.imshow(im[c], cmap="RdBu_r", vmin=-v, vmax=v)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(f"block {r}", fontsize=8)
            if r == 0:
                ax.set_title(f"ch {c}", fontsize=8)
    fig.suptitle(title or "global hyper-kernels K_g (first channels of each block)", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
