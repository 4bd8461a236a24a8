"""Global random-number-generator state: capture it into a checkpoint and restore it.

Lightning restores weights, optimizers, schedulers, loops and data-sampler states on resume, but
not the global generators. The score-matching losses draw their noise levels and perturbations
from torch's global generator, so without this a resumed run re-seeds (``seed_everything``) and
draws a different noise stream from the uninterrupted run. Everything is stored as tensors and
plain containers so the checkpoint still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

RNG_KEY = "scorelab_rng"


def collect_rng_states() -> dict[str, Any]:
    """The states of torch's CPU and CUDA generators, Python's ``random`` and NumPy's legacy
    global generator."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states`; parts missing from ``state`` are left alone."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        saved = list(state["cuda"])
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in saved])
        else:  # a different GPU count: every device continues the first saved stream
            for device in range(torch.cuda.device_count()):
                torch.cuda.set_rng_state(saved[0].cpu(), device)


class ForkedRNG:
    """Run a block (e.g. validation) on a fixed seed without disturbing the global stream.

    ``enter(seed)`` saves the global states (``outer_states``, None outside the block) and seeds
    torch; ``exit()`` restores them. Hooks such as ``on_validation_start``/``on_validation_end``
    call the two halves, which a ``with`` block cannot span.
    """

    def __init__(self) -> None:
        self.outer_states: dict[str, Any] | None = None

    def enter(self, seed: int) -> None:
        self.outer_states = collect_rng_states()
        torch.manual_seed(seed)

    def exit(self) -> None:
        if self.outer_states is not None:
            restore_rng_states(self.outer_states)
            self.outer_states = None
