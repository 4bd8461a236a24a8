"""EMA of the weights without a host synchronisation per update.

:class:`torch.optim.swa_utils.AveragedModel` keeps its update count in a device tensor and
branches on it in Python (``bool(n_averaged == 0)``, ``n_averaged > 0``): on a GPU that is two
device-to-host copies per training step, which stall the queue. :class:`EMAModel` is the same
module (same state-dict keys, same ``n_averaged`` buffer, the same ``_foreach_lerp_`` update,
so results are bit-identical), but mirrors the count on the host: it reads the buffer once,
after construction or a state-dict load, and never again.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


class EMAModel(AveragedModel):
    """Exponential moving average of ``model``'s parameters and buffers.

    The first update copies the weights; later ones do ``ema ← ema + (1 − decay)(w − ema)``.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        # The averaging itself is update_parameters below, so no avg_fn is handed to the base.
        super().__init__(model, use_buffers=True)
        self.decay = float(decay)
        self._host_count: int | None = None
        self.register_load_state_dict_post_hook(EMAModel._forget_count)

    @staticmethod
    def _forget_count(module: EMAModel, _incompatible) -> None:
        module._host_count = None

    def _count(self) -> int:
        if self._host_count is None:
            self._host_count = int(self.n_averaged)  # the one read, not repeated per step
        return self._host_count

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        ema = [*self.module.parameters(), *self.module.buffers()]
        new = [
            t.detach().to(e.device)
            for e, t in zip(ema, [*model.parameters(), *model.buffers()], strict=True)
        ]
        if self._count() == 0:
            torch._foreach_copy_(ema, new)
        else:
            groups: dict[tuple, tuple[list[Tensor], list[Tensor]]] = {}
            for e, t in zip(ema, new, strict=True):
                a, b = groups.setdefault((e.device, e.dtype), ([], []))
                a.append(e)
                b.append(t)
            for (_, dtype), (a, b) in groups.items():
                if dtype.is_floating_point or dtype.is_complex:
                    torch._foreach_lerp_(a, b, 1.0 - self.decay)
                else:  # integer buffers (e.g. BatchNorm's counter), as AveragedModel does
                    for e, t in zip(a, b, strict=True):
                        e.copy_(e * self.decay + t * (1.0 - self.decay))
        self.n_averaged += 1
        self._host_count += 1
