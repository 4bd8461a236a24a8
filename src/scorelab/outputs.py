"""What a run leaves of its samples on disk: ``samples.npz`` and a figure.

Shared by training (the end-of-run samples) and ``scorelab.sample``; below Lightning, so any
layer may write samples the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from scorelab.io import save_npz_atomic
from scorelab.plots import save_samples_figure


def write_samples(
    x: Tensor,
    out: str | Path,
    *,
    reference: Tensor | None = None,
    max_figure: int | None = None,
    uint8: bool = False,
) -> dict:
    """Save ``x`` (images ``(N, C, H, W)`` in [0, 1], or points ``(N, D)``) into ``out`` as
    ``samples.npz`` (array ``samples``) plus a grid or scatter figure (``reference``: data
    points drawn behind a scatter; ``max_figure``: a grid shows at most the first this many
    images; ``uint8``: images stored as round(255 x), a quarter of the size, which is what the
    Inception metrics see anyway). Returns ``{"samples_npz": path, "figure": path}``."""
    out = Path(out)
    arr = x.detach().float().cpu()
    if uint8 and x.ndim == 4:
        arr = (arr.clamp(0, 1) * 255).round().to(torch.uint8)
    npz = save_npz_atomic(out / "samples.npz", samples=arr.numpy())
    name = "samples_grid.png" if x.ndim == 4 else "samples_scatter.png"
    shown = x[:max_figure] if x.ndim == 4 and max_figure is not None else x
    fig = save_samples_figure(shown.detach().float().cpu(), out / name, reference=reference)
    return {"samples_npz": npz, "figure": fig}
