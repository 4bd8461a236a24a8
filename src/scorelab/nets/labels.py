"""Class labels as a learned embedding, with one extra row for "no label".

A conditional network with ``num_labels = K`` keeps an ``nn.Embedding(K + 1, dim)``: rows
``0 … K-1`` are the classes and row ``K`` is the unconditional ("null") label, which classifier-free
guidance (Ho & Salimans 2022) trains by dropping labels and samples with as ∅. ``label=None``
means ∅ for the whole batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def check_num_labels(num_labels) -> int | None:
    """``num_labels`` as an int >= 1, or None (no label embedding)."""
    if num_labels is None:
        return None
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(
            f"num_labels={num_labels!r} must be null (unconditional) or an integer >= 1 "
            "(the number of classes, e.g. 10 for MNIST)"
        )
    return num_labels


class LabelEmbedding(nn.Module):
    """``label`` (B,) long in [0, K] (K = ∅) or None → features (B, dim)."""

    def __init__(self, num_labels: int, dim: int) -> None:
        super().__init__()
        self.num_labels = int(num_labels)
        self.table = nn.Embedding(self.num_labels + 1, dim)

    @property
    def null_label(self) -> int:
        return self.num_labels

    def forward(self, label: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if label is None:
            label = torch.full((batch,), self.num_labels, dtype=torch.long, device=device)
        label = torch.as_tensor(label, device=device).long().reshape(-1)
        if label.numel() == 1 and batch != 1:
            label = label.expand(batch)
        if label.shape[0] != batch:
            raise ValueError(f"label has {label.shape[0]} entries for a batch of {batch}")
        check_label_range(label, self.num_labels)
        return self.table(label)


def check_label_range(label: Tensor, num_labels: int) -> None:
    """Refuse, in one line, a label outside [0, num_labels] (num_labels itself is ∅), which
    ``nn.Embedding`` would meet with an IndexError. CPU only: on a GPU the read-back would
    stall every forward pass (and break compiled graphs), so there the labels are checked
    where they enter (:func:`scorelab.guidance.check_label_config`, guidance's label check).
    """
    if label.numel() == 0 or label.is_cuda or torch.compiler.is_compiling():
        return
    lo, hi = torch.stack(torch.aminmax(label)).tolist()  # one read-back
    if lo < 0 or hi > num_labels:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"label {bad} is outside [0, {num_labels}] (the classes 0..{num_labels - 1}, and "
            f"{num_labels} = no label); pass labels in that range, or build the network with "
            "model.net.num_labels = the data's number of classes"
        )


def label_table(num_labels: int | None, dim: int) -> LabelEmbedding | None:
    """A :class:`LabelEmbedding` of width ``dim``, or None for ``num_labels=None``."""
    return None if num_labels is None else LabelEmbedding(num_labels, dim)


def add_label(emb: Tensor | None, table: LabelEmbedding | None, label, x: Tensor, who: str):
    """``emb`` (B, dim) or None plus the embedding of ``label`` in x's dtype; a network ``who``
    without a ``table`` accepts only ``label=None`` and returns ``emb``."""
    if table is None:
        if label is not None:
            raise ValueError(
                f"{who} was built without labels (num_labels=null) but got a label; set "
                "model.net.num_labels to the number of classes and train with data.labels=true"
            )
        return emb
    lab = table(label, x.shape[0], x.device).to(x.dtype)
    return lab if emb is None else emb + lab
