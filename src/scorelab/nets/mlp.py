"""A noise-conditional MLP for 2-D toys and other low-dimensional data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scorelab.nets.conditioning import check_kind
from scorelab.nets.labels import add_label, check_num_labels, label_table
from scorelab.nets.noise_embedding import (
    EMBEDDINGS,
    FEATURES,
    NoiseConditioned,
    NoiseEmbedding,
    check_positive_ints,
)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
}
COMBINE = ("concat", "add")


class MLP(NoiseConditioned):
    """Score MLP: `n_layers` hidden layers of width `hidden`, then a linear map back to `dim`.

    The conditioning enters either once, concatenated to the input (`combine="concat"`), or at
    every hidden layer, projected to `hidden` and added before the activation (`combine="add"`).

    Args:
        dim: data dimension D.
        hidden: width of the hidden layers.
        n_layers: number of hidden layers (NCSN Fig. 2: 3 × 128 with softplus).
        activation: "softplus" | "silu" | "elu" | "relu" | "tanh".
        embedding: what `cond` holds, and the ``cond_input`` (as for UNetSmall).
        num_classes: number of noise levels for embedding="index".
        embed_dim: width of the conditioning features.
        embed_features: "sinusoidal" | "fourier" features of log σ or t.
        combine: "concat" | "add".
        num_labels: number of classes K (null: none); a label embedding of width ``embed_dim``
            is added to the noise features.

    Shapes: x (B, D), cond (B,), label (B,) long in [0, K] or None (= K) -> (B, D).
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 128,
        n_layers: int = 3,
        activation: str = "softplus",
        embedding: str = "sigma",
        num_classes: int | None = None,
        embed_dim: int = 32,
        embed_features: str = "fourier",
        combine: str = "concat",
        num_labels: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_ints(dim=dim, hidden=hidden, n_layers=n_layers)
        check_kind("activation", activation, tuple(ACTIVATIONS))
        check_kind("embedding", embedding, EMBEDDINGS)
        check_kind("embed_features", embed_features, FEATURES)
        check_kind("combine", combine, COMBINE)
        self.dim, self.embedding, self.combine = dim, embedding, combine
        self.num_labels = check_num_labels(num_labels)
        self.embed = None
        if embedding != "none":
            self.embed = NoiseEmbedding(
                embedding, embed_dim, features=embed_features, num_classes=num_classes
            )
        self.label_embed = label_table(self.num_labels, embed_dim)
        conditioned = self.embed is not None or self.label_embed is not None
        e = embed_dim if conditioned else 0
        concat = combine == "concat" and conditioned
        widths = [dim + (e if concat else 0)] + [hidden] * n_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.cond_proj = (
            nn.ModuleList(nn.Linear(e, hidden) for _ in range(n_layers))
            if combine == "add" and conditioned
            else None
        )
        self.act = ACTIVATIONS[activation]()
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, cond: Tensor | None = None, *, label=None) -> Tensor:
        emb = None
        if self.embed is not None:
            if cond is None:
                raise ValueError(f"MLP(embedding={self.embedding!r}) needs cond of shape (B,)")
            emb = self.embed(cond)
        emb = add_label(emb, self.label_embed, label, x, "MLP")
        h = x
        if emb is not None and self.cond_proj is None:
            h = torch.cat([x, emb.to(x.dtype)], dim=1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if self.cond_proj is not None and emb is not None:
                h = h + self.cond_proj[i](emb)
            h = self.act(h)
        return self.out(h)
