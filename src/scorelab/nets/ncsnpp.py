"""NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs"), a raw U-Net.

One class covers the official ``ncsnpp`` family: DDPM++ and the DDPM U-Net are configurations
of it (:mod:`scorelab.nets.ddpm`).

Conditioning, ``net(x, cond)`` with ``cond`` a float ``(B,)`` of the kind ``cond_input``
(:mod:`scorelab.nets.conditioning`), whose scale the network undoes before embedding:

* ``embedding_type="fourier"``: Gaussian Fourier features of ln σ; by default ``cond`` is σ
  (VE training, as the official code).
* ``embedding_type="positional"``: sinusoids of 999·t (or 250·ln σ); by default ``cond`` is
  ``999·t`` (``"step"``), as the official code feeds for continuous VP/subVP training (the
  integer step in ``[0, 999]`` for discrete DDPM).

Class labels (``num_labels = K``): ``net(x, cond, label=y)``, y (B,) long in ``[0, K]`` (K or
None: the null label ∅ of classifier-free guidance). A learned label embedding
(:mod:`scorelab.nets.labels`) as wide as the noise features is added to them before the
embedding MLP, so the label reaches every block as the noise level does (as EDM's
``SongUNet``); with ``conditional=False`` the MLP sees the label alone. Without labels no
parameter is added: the official checkpoints load as before.

The network is raw: no division by σ (``scale_by_sigma`` lives in :mod:`scorelab.nets.precond`)
and no input centring.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scorelab.nets.conditioning import (
    CONTINUOUS,
    SINUSOID_SCALE,
    STEP_SCALE,
    check_kind,
    unscale,
)
from scorelab.nets.labels import add_label, check_num_labels, label_table
from scorelab.nets.layers_sde import (
    AttnBlock,
    Combine,
    Downsample,
    GaussianFourierEmbedding,
    ResnetBlockBigGAN,
    ResnetBlockDDPM,
    Upsample,
    conv3x3,
    dense,
    group_norm,
    sinusoidal_embedding,
)

__all__ = ["NCSNpp"]

_SQRT_HALF = 2.0**-0.5
_CHOICES = {
    "resblock_type": ("biggan", "ddpm"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
}


def _choice(name: str, value: str) -> str:
    return check_kind(name, str(value).lower(), _CHOICES[name])


class DownLevel(nn.Module):
    """One encoder resolution: ``blocks`` (each optionally followed by ``attns[i]``), then an
    optional ``downsample`` and the input-pyramid module ``pyramid`` (a :class:`Combine` for
    ``input_skip``, a convolutional :class:`Downsample` for ``residual``)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.attns = nn.ModuleList()
        self.downsample: nn.Module | None = None
        self.pyramid: nn.Module | None = None


class UpLevel(nn.Module):
    """One decoder resolution: ``blocks`` (``num_res_blocks + 1``, each fed a skip), an optional
    ``attn``, the output-pyramid modules (``pyramid_norm`` + ``pyramid_conv`` or
    ``pyramid_up``) and an optional ``upsample``."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.attn: nn.Module | None = None
        self.pyramid_norm: nn.Module | None = None
        self.pyramid_conv: nn.Module | None = None
        self.pyramid_up: nn.Module | None = None
        self.upsample: nn.Module | None = None


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ U-Net. Defaults are the NCSN++ continuous CIFAR-10 configuration
    (62.76M parameters).

    Args:
        image_size: input height = width; divisible by ``2 ** (len(ch_mult) - 1)``.
        channels: image channels.
        nf: base width; level ``i`` has ``nf * ch_mult[i]`` channels.
        ch_mult: width multipliers, one per resolution.
        num_res_blocks: residual blocks per resolution in the encoder (decoder: one more).
        attn_resolutions: resolutions (side lengths) that get self-attention.
        dropout: dropout inside residual blocks, in ``[0, 1)``.
        resamp_with_conv: whether stand-alone resamplers (``resblock_type="ddpm"``, pyramid)
            have a 3×3 convolution.
        conditional: condition on ``cond``; if False the embedding is not used.
        fir: FIR (``fir_kernel``) resampling instead of nearest / average pooling.
        fir_kernel: 1-D FIR taps.
        skip_rescale: divide every residual sum by √2.
        resblock_type: ``"biggan"`` (resampling inside residual blocks) or ``"ddpm"``.
        progressive: output pyramid: ``"none"``, ``"output_skip"`` or ``"residual"``.
        progressive_input: input pyramid: ``"none"``, ``"input_skip"`` or ``"residual"``.
        progressive_combine: ``"sum"`` or ``"cat"`` (for ``input_skip``).
        init_scale: scale of the last layer of each residual branch (0 gives 1e-10).
        embedding_type: ``"fourier"`` or ``"positional"`` (see the module docstring).
        fourier_scale: standard deviation of the Fourier frequencies.
        cond_input: ``"sigma"``, ``"c_noise"``, ``"time"`` or ``"step"``; None: ``"sigma"``
            (Fourier), ``"step"`` (positional), ``"none"`` when not ``conditional``.
        num_labels: number of classes K (None: unconditional); the label table is ``2·nf``
            (Fourier) or ``nf`` (positional) wide.

    Shapes: x (B, channels, image_size, image_size), cond (B,), label (B,) long in [0, K]
    or None (= K) -> (B, channels, image_size, image_size).
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        channels: int = 3,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        fir: bool = True,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "residual",
        progressive_combine: str = "sum",
        init_scale: float = 0.0,
        embedding_type: str = "fourier",
        fourier_scale: float = 16.0,
        cond_input: str | None = None,
        num_labels: int | None = None,
    ) -> None:
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        attn_resolutions = tuple(int(r) for r in attn_resolutions)
        self.resblock_type = _choice("resblock_type", resblock_type)
        self.progressive = _choice("progressive", progressive)
        self.progressive_input = _choice("progressive_input", progressive_input)
        combine = _choice("progressive_combine", progressive_combine)
        self.embedding_type = _choice("embedding_type", embedding_type)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        if len(ch_mult) < 1 or min(ch_mult) < 1:
            raise ValueError(f"ch_mult must be a non-empty sequence of ints >= 1, got {ch_mult}.")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        factor = 2 ** (len(ch_mult) - 1)
        if image_size < factor or image_size % factor:
            raise ValueError(
                f"image_size={image_size} is not divisible by 2**(len(ch_mult)-1)={factor} "
                f"(ch_mult={ch_mult}); use an image size that is a multiple of {factor} or a "
                f"shorter ch_mult."
            )
        resolutions = [image_size // 2**i for i in range(len(ch_mult))]
        for r in attn_resolutions:
            if r not in resolutions:
                raise ValueError(
                    f"attn_resolutions contains {r}, which is never reached: with image_size="
                    f"{image_size} and {len(ch_mult)} levels the resolutions are {resolutions}; "
                    f"pick attention resolutions from that list."
                )
        for c in sorted({nf} | {nf * m for m in ch_mult}):
            groups = max(1, min(c // 4, 32))
            if c % groups:
                raise ValueError(
                    f"feature width {c} (nf={nf} × ch_mult) is not divisible by its GroupNorm "
                    f"group count {groups}; use an nf that is a multiple of 32 (or of 4 below 128)."
                )

        self.image_size, self.channels, self.nf = image_size, channels, nf
        self.conditional = conditional
        self.num_labels = check_num_labels(num_labels)
        # The embedding MLP (and every block's projection of it) exists when the network sees
        # the noise level, a label, or both.
        embedded = conditional or self.num_labels is not None
        if not conditional:
            self.cond_input = check_kind("cond_input", cond_input or "none", ("none",))
        else:
            default = "sigma" if self.embedding_type == "fourier" else "step"
            self.cond_input = check_kind("cond_input", cond_input or default, tuple(CONTINUOUS))
        self.rescale = _SQRT_HALF if skip_rescale else 1.0
        n_res = len(ch_mult)
        biggan = self.resblock_type == "biggan"
        temb_dim = 4 * nf if embedded else None

        block_kw = dict(
            temb_dim=temb_dim, dropout=dropout, skip_rescale=skip_rescale, init_scale=init_scale
        )

        def resblock(in_ch: int, out_ch: int | None = None, **kw: bool) -> nn.Module:
            block = ResnetBlockBigGAN if biggan else ResnetBlockDDPM
            return block(in_ch, out_ch, fir=fir, fir_kernel=fir_kernel, **block_kw, **kw)

        def attn(ch: int) -> AttnBlock:
            return AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        # Noise-level / time embedding: Fourier features of log σ, or sinusoids of cond.
        fourier_embedding = self.embedding_type == "fourier"
        self.fourier = GaussianFourierEmbedding(nf, fourier_scale) if fourier_embedding else None
        embed_dim = 2 * nf if fourier_embedding else nf
        self.temb = (
            nn.Sequential(dense(embed_dim, 4 * nf), nn.SiLU(), dense(4 * nf, 4 * nf))
            if embedded
            else None
        )
        self.label_embed = label_table(self.num_labels, embed_dim)

        # Parameter-free pyramid resamplers (shared by every level).
        self.pyramid_downsample = (
            Downsample(channels, fir=fir, fir_kernel=fir_kernel)
            if self.progressive_input == "input_skip"
            else None
        )
        self.pyramid_upsample = (
            Upsample(channels, fir=fir, fir_kernel=fir_kernel)
            if self.progressive == "output_skip"
            else None
        )

        # Encoder.
        self.conv_in = conv3x3(channels, nf)
        skip_ch = [nf]
        in_ch, pyr_ch = nf, channels
        self.down = nn.ModuleList()
        for i in range(n_res):
            level = DownLevel()
            out_ch = nf * ch_mult[i]
            for _ in range(num_res_blocks):
                level.blocks.append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if resolutions[i] in attn_resolutions:
                    level.attns.append(attn(in_ch))
                skip_ch.append(in_ch)
            if i != n_res - 1:
                if biggan:
                    level.downsample = resblock(in_ch, down=True)
                else:
                    level.downsample = Downsample(
                        in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel
                    )
                if self.progressive_input == "input_skip":
                    level.pyramid = Combine(channels, in_ch, method=combine)
                    in_ch = 2 * in_ch if combine == "cat" else in_ch
                elif self.progressive_input == "residual":
                    level.pyramid = Downsample(
                        pyr_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel
                    )
                    pyr_ch = in_ch
                skip_ch.append(in_ch)
            self.down.append(level)

        # Bottleneck.
        in_ch = skip_ch[-1]
        self.mid_block0 = resblock(in_ch)
        self.mid_attn = attn(in_ch)
        self.mid_block1 = resblock(in_ch)

        # Decoder, from the coarsest resolution to the finest.
        self.up = nn.ModuleList()
        pyr_ch = 0
        for i in reversed(range(n_res)):
            level = UpLevel()
            out_ch = nf * ch_mult[i]
            for _ in range(num_res_blocks + 1):
                level.blocks.append(resblock(in_ch + skip_ch.pop(), out_ch))
                in_ch = out_ch
            if resolutions[i] in attn_resolutions:
                level.attn = attn(in_ch)
            if self.progressive == "output_skip" or (
                self.progressive == "residual" and i == n_res - 1
            ):
                level.pyramid_norm = group_norm(in_ch)
                if self.progressive == "output_skip":
                    level.pyramid_conv = conv3x3(in_ch, channels, init_scale=init_scale)
                    pyr_ch = channels
                else:
                    level.pyramid_conv = conv3x3(in_ch, in_ch)
                    pyr_ch = in_ch
            elif self.progressive == "residual":
                level.pyramid_up = Upsample(
                    pyr_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel
                )
                pyr_ch = in_ch
            if i != 0:
                if biggan:
                    level.upsample = resblock(in_ch, up=True)
                else:
                    level.upsample = Upsample(
                        in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel
                    )
            self.up.append(level)
        assert not skip_ch

        if self.progressive != "output_skip":
            self.norm_out = group_norm(in_ch)
            self.conv_out = conv3x3(in_ch, channels, init_scale=init_scale)
        else:
            self.norm_out = self.conv_out = None

    def cond_features(self, cond: Tensor) -> Tensor | None:
        """The fixed features the network computes from ``cond`` (B,), before its learned MLP:
        Fourier features of ln σ (or t), or sinusoids of 999·t (or 250·ln σ); None if not
        ``conditional``."""
        if not self.conditional:
            return None
        if self.fourier is not None:
            return self.fourier(unscale(self.cond_input, cond))
        if self.cond_input == "step":  # the official input, untouched
            return sinusoidal_embedding(cond, self.nf)
        log_sigma = CONTINUOUS[self.cond_input]
        scale = SINUSOID_SCALE[True] if log_sigma else STEP_SCALE
        return sinusoidal_embedding(unscale(self.cond_input, cond) * scale, self.nf)

    def forward(self, x: Tensor, cond: Tensor | None = None, *, label=None) -> Tensor:
        """Raw output; ``cond`` is ignored when not ``conditional``, ``label`` needs
        ``num_labels`` (shapes in the class docstring)."""
        expected = (self.channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"input has shape {tuple(x.shape)} but the network was built for "
                f"(B, {', '.join(map(str, expected))}); rebuild it with channels="
                f"{x.shape[1]} and image_size={x.shape[-1]} or resize the data."
            )
        temb = None
        if self.conditional:
            if cond is None:
                raise ValueError(
                    f"NCSNpp(conditional=True) needs cond of shape (B,) "
                    f"(cond_input={self.cond_input!r})"
                )
            temb = self.cond_features(cond).to(x.dtype)
        temb = add_label(temb, self.label_embed, label, x, type(self).__name__)
        if temb is not None:
            temb = self.temb(temb)

        biggan = self.resblock_type == "biggan"
        pyramid = x if self.progressive_input != "none" else None

        # Encoder: keep every block output for the decoder's skip connections.
        hs = [self.conv_in(x)]
        for level in self.down:
            for j, block in enumerate(level.blocks):
                h = block(hs[-1], temb)
                if len(level.attns):
                    h = level.attns[j](h)
                hs.append(h)
            if level.downsample is not None:
                h = level.downsample(hs[-1], temb) if biggan else level.downsample(hs[-1])
                if self.progressive_input == "input_skip":
                    pyramid = self.pyramid_downsample(pyramid)
                    h = level.pyramid(pyramid, h)
                elif self.progressive_input == "residual":
                    pyramid = (level.pyramid(pyramid) + h) * self.rescale
                    h = pyramid
                hs.append(h)

        h = self.mid_block0(hs[-1], temb)
        h = self.mid_attn(h)
        h = self.mid_block1(h, temb)

        # Decoder: each block consumes one skip; the output pyramid accumulates the image.
        out_pyramid = None
        for level in self.up:
            for block in level.blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
            if level.attn is not None:
                h = level.attn(h)
            if level.pyramid_conv is not None:
                p = level.pyramid_conv(F.silu(level.pyramid_norm(h)))
                if self.progressive == "residual" or out_pyramid is None:
                    out_pyramid = p
                else:
                    out_pyramid = self.pyramid_upsample(out_pyramid) + p
            elif level.pyramid_up is not None:
                out_pyramid = (level.pyramid_up(out_pyramid) + h) * self.rescale
                h = out_pyramid
            if level.upsample is not None:
                h = level.upsample(h, temb) if biggan else level.upsample(h)

        if self.progressive == "output_skip":
            return out_pyramid
        return self.conv_out(F.silu(self.norm_out(h)))
