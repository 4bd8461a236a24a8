"""RefineNet score networks of NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020).

A residual encoder, then a RefineNet decoder (Lin et al. 2017) fusing its features from the
coarsest level back up to full resolution:

- encoder: a 3×3 stem, then stages of two pre-activation residual blocks. The second stage
  halves the resolution (conv, then mean pooling); deeper stages use dilated convolutions
  (dilation 2, then 4) instead of further subsampling.
- decoder: one RefineBlock per stage, deepest first: residual conv units (RCU) adapt each
  input, multi-resolution fusion (MSF) merges them at the finer resolution, chained residual
  pooling (CRP) gathers context, and RCUs refine once more.
- head: norm → ELU → 3×3 conv back to the data channels.

`NCSN` conditions every normalisation on the noise-level index (CondInstanceNorm++), uses
average pooling in the CRP chain and normalises inside the RefineBlocks. `NCSNv2` and
`NCSNv2Deeper` are unconditional (InstanceNorm++ in the encoder only, max pooling in CRP); their
1/σ output scaling is left to the parametrisation, so all are raw networks `net(x, cond)`.

Class labels (``num_labels = K``): ``net(x, cond, label=y)``, y (B,) long in [0, K] (K or None:
the null label ∅ of classifier-free guidance). With no embedding vector to add a label to, the
label shifts the normalisations' β: one learned embedding of width ``ngf``
(:mod:`scorelab.nets.labels`) is projected, in every encoder residual block, to a per-channel
offset after each of its two normalisations; the decoder sees the label through the encoder's
features. Without labels no parameter is added, so the official checkpoints convert as before
(`scorelab.conversion.ncsn` maps their module names onto these).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from scorelab.nets.labels import add_label, check_num_labels, label_table
from scorelab.nets.noise_embedding import check_positive_ints
from scorelab.nets.normalization import CondInstanceNorm2dPlus, InstanceNorm2dPlus

NormFactory = Callable[[int], nn.Module]


def _conv3x3(c_in: int, c_out: int, *, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=bias)


class ResBlock(nn.Module):
    """Pre-activation residual block: norm → act → conv → norm → act → conv, plus a skip.

    An `entry` block opens a stage: its first conv keeps `c_in` channels, the second maps to
    `c_out`, the skip is a convolution; without dilation it halves the resolution (2×2 mean
    pooling on both paths), with dilation all its 3×3 convs (the skip too) are dilated.
    With `label_dim` > 0 a label embedding (B, label_dim) shifts each normalisation's output
    per channel (a label-dependent β).

    Shapes: x (B, c_in, H, W), y (B,) or None, emb (B, label_dim) or None -> (B, c_out, H', W')
    with H' = H/2 for a pooling entry block and H' = H otherwise.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        norm: NormFactory,
        act: nn.Module,
        entry: bool = False,
        dilation: int | None = None,
        label_dim: int = 0,
    ) -> None:
        super().__init__()
        d = dilation or 1
        c_mid = c_in if entry else c_out
        self.pool = entry and dilation is None
        self.act = act
        self.norm1 = norm(c_in)
        self.conv1 = _conv3x3(c_in, c_mid, dilation=d)
        self.norm2 = norm(c_mid)
        self.conv2 = _conv3x3(c_mid, c_out, dilation=d)
        self.skip: nn.Module | None = None
        if entry or c_in != c_out:
            if dilation is None:
                self.skip = nn.Conv2d(c_in, c_out, 1)
            else:
                self.skip = _conv3x3(c_in, c_out, dilation=d)
        self.label_shift1: nn.Linear | None = None
        self.label_shift2: nn.Linear | None = None
        if label_dim > 0:
            self.label_shift1 = nn.Linear(label_dim, c_in)
            self.label_shift2 = nn.Linear(label_dim, c_mid)

    def forward(self, x: Tensor, y: Tensor | None, emb: Tensor | None = None) -> Tensor:
        h = self._shift(self.norm1(x, y), self.label_shift1, emb)
        h = self.conv1(self.act(h))
        h = self._shift(self.norm2(h, y), self.label_shift2, emb)
        h = self.conv2(self.act(h))
        skip = x if self.skip is None else self.skip(x)
        if self.pool:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip

    @staticmethod
    def _shift(h: Tensor, proj: nn.Linear | None, emb: Tensor | None) -> Tensor:
        if proj is None or emb is None:
            return h
        return h + proj(emb).to(h.dtype)[..., None, None]


class ResidualConvUnits(nn.Module):
    """`n_blocks` residual conv units, each `n_stages` × ([norm] → act → 3×3 conv, no bias),
    stored flat (unit b, stage s: `convs[b * n_stages + s]`). (B, C, H, W) -> same."""

    def __init__(
        self,
        features: int,
        n_blocks: int,
        *,
        norm: NormFactory | None,
        act: nn.Module,
        n_stages: int = 2,
    ) -> None:
        super().__init__()
        self.n_blocks, self.n_stages, self.act = n_blocks, n_stages, act
        n = n_blocks * n_stages
        self.convs = nn.ModuleList(_conv3x3(features, features, bias=False) for _ in range(n))
        self.norms = None if norm is None else nn.ModuleList(norm(features) for _ in range(n))

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        for b in range(self.n_blocks):
            residual = x
            for s in range(self.n_stages):
                i = b * self.n_stages + s
                if self.norms is not None:
                    x = self.norms[i](x, y)
                x = self.convs[i](self.act(x))
            x = x + residual
        return x


class MultiResolutionFusion(nn.Module):
    """Project each input to `features` channels ([norm] → 3×3 conv), resize, and sum:
    xs[i] (B, in_planes[i], H_i, W_i) -> (B, features, *size)."""

    def __init__(self, in_planes: Sequence[int], features: int, *, norm: NormFactory | None):
        super().__init__()
        self.convs = nn.ModuleList(_conv3x3(c, features) for c in in_planes)
        self.norms = None if norm is None else nn.ModuleList(norm(c) for c in in_planes)

    def forward(self, xs: Sequence[Tensor], y: Tensor | None, size: tuple[int, int]) -> Tensor:
        out: Tensor | None = None
        for i, x in enumerate(xs):
            if self.norms is not None:
                x = self.norms[i](x, y)
            h = self.convs[i](x)
            if tuple(h.shape[-2:]) != tuple(size):
                h = F.interpolate(h, size=size, mode="bilinear", align_corners=True)
            out = h if out is None else out + h
        assert out is not None
        return out


class ChainedResidualPooling(nn.Module):
    """act, then `n_stages` chained ([norm] → 5×5 stride-1 pool → 3×3 conv), each added to the
    input. (B, C, H, W) -> same."""

    def __init__(
        self,
        features: int,
        *,
        norm: NormFactory | None,
        act: nn.Module,
        max_pool: bool,
        n_stages: int = 2,
    ) -> None:
        super().__init__()
        self.act = act
        self.convs = nn.ModuleList(
            _conv3x3(features, features, bias=False) for _ in range(n_stages)
        )
        self.norms = (
            None if norm is None else nn.ModuleList(norm(features) for _ in range(n_stages))
        )
        # Zero padding counts in the average, as in the official code.
        pool = nn.MaxPool2d if max_pool else nn.AvgPool2d
        self.pooling = pool(5, stride=1, padding=2)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        x = self.act(x)
        path = x
        for i, conv in enumerate(self.convs):
            if self.norms is not None:
                path = self.norms[i](path, y)
            path = conv(self.pooling(path))
            x = x + path
        return x


class RefineBlock(nn.Module):
    """RCU on each input → MSF (when there are two inputs) → CRP → RCU (three units at the end).

    Shapes: xs[i] (B, in_planes[i], H_i, W_i) -> (B, features, *size).
    """

    def __init__(
        self,
        in_planes: Sequence[int],
        features: int,
        *,
        norm: NormFactory | None,
        act: nn.Module,
        max_pool: bool,
        end: bool = False,
    ) -> None:
        super().__init__()
        self.adapt = nn.ModuleList(ResidualConvUnits(c, 2, norm=norm, act=act) for c in in_planes)
        self.fuse = (
            MultiResolutionFusion(in_planes, features, norm=norm) if len(in_planes) > 1 else None
        )
        self.pool = ChainedResidualPooling(features, norm=norm, act=act, max_pool=max_pool)
        self.out = ResidualConvUnits(features, 3 if end else 1, norm=norm, act=act)

    def forward(self, xs: Sequence[Tensor], y: Tensor | None, size: tuple[int, int]) -> Tensor:
        hs = [adapt(x, y) for adapt, x in zip(self.adapt, xs)]
        h = hs[0] if self.fuse is None else self.fuse(hs, y, size)
        return self.out(self.pool(h, y), y)


@dataclass(frozen=True)
class _Stage:
    mult: int  # output channels = mult * ngf
    entry: bool  # the first block opens the stage (conv skip; pooling unless dilated)
    dilation: int | None


# Encoder layouts of the official networks.
_NCSN_STAGES = (
    _Stage(1, False, None),
    _Stage(2, True, None),
    _Stage(2, True, 2),
    _Stage(2, True, 4),
)
_DEEPER_STAGES = (
    _Stage(1, False, None),
    _Stage(2, True, None),
    _Stage(2, True, None),
    _Stage(4, True, 2),
    _Stage(4, True, 4),
)


class _RefineNet(nn.Module):
    """Shared body; see `NCSN`, `NCSNv2` and `NCSNv2Deeper` for the public networks."""

    stages: tuple[_Stage, ...] = _NCSN_STAGES
    default_image_size = 32
    num_classes: int | None = None  # noise levels L of the conditional network (NCSN)

    def __init__(
        self,
        channels: int = 3,
        image_size: int | None = None,
        ngf: int = 128,
        rescale_input: bool = True,
        num_labels: int | None = None,
    ) -> None:
        super().__init__()
        image_size = self.default_image_size if image_size is None else image_size
        check_positive_ints("use 1 for MNIST or 3 for colour images", channels=channels)
        check_positive_ints("the official networks use 64 (MNIST) or 128", ngf=ngf)
        n_pools = sum(s.entry and s.dilation is None for s in self.stages)
        factor = 2**n_pools
        min_size = 4 * factor
        if (
            isinstance(image_size, bool)
            or not isinstance(image_size, int)
            or image_size % factor
            or image_size < min_size
        ):
            times = "once" if n_pools == 1 else f"{n_pools} times"
            raise ValueError(
                f"image_size={image_size!r} must be a multiple of {factor} and >= {min_size} "
                f"(the network halves the resolution {times}); use 28, 32 or 64"
            )
        self.channels, self.image_size, self.ngf = channels, image_size, ngf
        self.rescale_input = rescale_input
        self.num_labels = check_num_labels(num_labels)
        self.label_embed = label_table(self.num_labels, ngf)
        label_dim = 0 if self.label_embed is None else ngf

        conditional = self.num_classes is not None
        if conditional:

            def norm(c: int) -> nn.Module:
                return CondInstanceNorm2dPlus(c, self.num_classes)
        else:
            norm = InstanceNorm2dPlus
        act = nn.ELU()

        self.stem = nn.Conv2d(channels, ngf, 3, padding=1)
        self.encoder = nn.ModuleList()
        c = ngf
        widths = []
        for st in self.stages:
            c_out = st.mult * ngf
            kw = dict(norm=norm, act=act, dilation=st.dilation, label_dim=label_dim)
            self.encoder.append(
                nn.ModuleList(
                    [ResBlock(c, c_out, entry=st.entry, **kw), ResBlock(c_out, c_out, **kw)]
                )
            )
            widths.append(c_out)
            c = c_out

        # Decoder, deepest level first. The block at level k fuses the encoder output of level k
        # with the previous (deeper) block's output, both widths[k] wide, and has as many
        # channels as encoder level k - 1.
        self.decoder = nn.ModuleList()
        n = len(widths)
        for k in reversed(range(n)):
            features = widths[k - 1] if k > 0 else ngf
            in_planes = [widths[k]] if k == n - 1 else [widths[k], widths[k]]
            self.decoder.append(
                RefineBlock(
                    in_planes,
                    features,
                    norm=norm if conditional else None,
                    act=act,
                    max_pool=not conditional,
                    end=k == 0,
                )
            )
        self.out_norm = norm(ngf)
        self.out_act = act
        self.out_conv = nn.Conv2d(ngf, channels, 3, padding=1)

    def _features(self, x: Tensor, y: Tensor | None, label=None) -> Tensor:
        emb = add_label(None, self.label_embed, label, x, type(self).__name__)
        if self.rescale_input:
            x = 2 * x - 1  # data in [0, 1] -> [-1, 1]
        h = self.stem(x)
        skips = []
        for stage in self.encoder:
            for block in stage:
                h = block(h, y, emb)
            skips.append(h)
        out: Tensor | None = None
        for refine, skip in zip(self.decoder, reversed(skips)):
            size = (skip.shape[-2], skip.shape[-1])
            out = refine([skip] if out is None else [skip, out], y, size)
        assert out is not None
        return self.out_conv(self.out_act(self.out_norm(out, y)))


class NCSN(_RefineNet):
    """NCSN score network: dilated RefineNet with CondInstanceNorm++ and ELU.

    The official `CondRefineNetDilated`: ngf 128 for CIFAR-10/CelebA (30.1M parameters), ngf 64
    for MNIST (7.6M parameters), L = 10 noise levels.

    Args:
        channels: data channels C.
        image_size: H = W; a multiple of 2 and >= 8 (28, 32, 64, ...).
        ngf: base width.
        num_classes: number of noise levels L; cond is the index in [0, L).
        rescale_input: map x -> 2x - 1 first (the official code, for data in [0, 1]); set False
            when the data are already in [-1, 1].
        num_labels: number of classes K of a class-conditional network (None: none); see the
            module docstring for how the label enters.

    Shapes: x (B, C, H, W), cond (B,) long, label (B,) long in [0, K] or None (= K)
    -> (B, C, H, W).
    """

    cond_input = "index"  # the kind of cond (scorelab.nets.conditioning)

    def __init__(
        self,
        channels: int = 3,
        image_size: int = 32,
        ngf: int = 128,
        num_classes: int = 10,
        rescale_input: bool = True,
        num_labels: int | None = None,
    ) -> None:
        check_positive_ints("it is the number of noise levels L", num_classes=num_classes)
        self.num_classes = num_classes  # a plain int, read by _RefineNet.__init__
        super().__init__(channels, image_size, ngf, rescale_input, num_labels)

    def cond_features(self, cond: Tensor) -> Tensor:
        """One-hot (B, L) of the level index: the row every CondInstanceNorm++ table reads."""
        return F.one_hot(cond.long(), self.num_classes).float()

    def forward(self, x: Tensor, cond: Tensor, *, label=None) -> Tensor:
        if cond.dtype.is_floating_point:
            raise ValueError(
                f"NCSN is conditioned on the noise-level index: cond must be a long tensor "
                f"of shape (B,) with values in [0, {self.num_classes}), got dtype {cond.dtype}"
            )
        return self._features(x, cond, label)


class NCSNv2(_RefineNet):
    """NCSNv2 network for 32 px (and CelebA-64 in the official code): unconditional InstanceNorm++.

    The official `NCSNv2` without its final division by σ (about 29.7M parameters at ngf 128).

    Arguments as for `NCSN`, without `num_classes`.

    Shapes: x (B, C, H, W), cond (B,) ignored (may be None), label (B,) long in [0, K] or
    None (= K) -> (B, C, H, W).
    """

    cond_input = "none"  # unconditional: the parametrisation divides by σ

    def cond_features(self, cond: Tensor) -> None:
        """None: the network never sees the noise level."""
        return None

    def forward(self, x: Tensor, cond: Tensor | None = None, *, label=None) -> Tensor:
        return self._features(x, None, label)


class NCSNv2Deeper(NCSNv2):
    """Deeper NCSNv2 for 64 px and above: five stages, two of them pooling, widths up to 4·ngf.

    The official `NCSNv2Deeper` without its final division by σ. Arguments as for `NCSNv2`;
    `image_size` (default 64) must be a multiple of 4 and >= 16.
    """

    stages = _DEEPER_STAGES
    default_image_size = 64
