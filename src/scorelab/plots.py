"""Figures people look at: image grids and 2-D scatter plots of samples."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from scorelab.io import atomic_output


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """``fig.savefig`` through a temporary file and a rename (a kill leaves no half image)."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(path)


def save_samples_figure(
    x: Tensor, path: str | Path, *, title: str = "", reference: Tensor | None = None
) -> Path:
    """Save samples as an image grid (``(N, C, H, W)`` in [0, 1]) or a scatter plot (``(N, 2)``;
    other dimensions show the first two coordinates). Returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.ndim == 4:
        from torchvision.utils import make_grid, save_image

        nrow = max(1, int(round(x.shape[0] ** 0.5)))
        with atomic_output(path) as tmp:
            save_image(make_grid(x.clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0), tmp)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = x.reshape(x.shape[0], -1)[:, :2].numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    if reference is not None:
        ref = reference.reshape(reference.shape[0], -1)[:, :2].numpy()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.3, c="tab:gray", label="data")
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.6, c="tab:blue", label="samples")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=9)
    if reference is not None:
        ax.legend(loc="upper left", fontsize=7, markerscale=4)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
