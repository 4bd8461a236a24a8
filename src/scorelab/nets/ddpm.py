"""DDPM++ and DDPM U-Nets (Song et al. 2021; Ho et al. 2020) as configurations of NCSN++.

Both are raw networks ``net(x, cond)`` with a sinusoidal (positional) embedding of ``cond``: the
official code feeds ``999·t`` for continuous VP/subVP training and the integer step index in
``[0, 999]`` for discrete DDPM training (``cond_input="step"``; another kind of
:mod:`scorelab.nets.conditioning`, such as EDM's ``c_noise``, via ``cond_input``). See
:class:`scorelab.nets.ncsnpp.NCSNpp` for the layer layout and the remaining arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

from scorelab.nets.ncsnpp import NCSNpp

__all__ = ["DDPM", "DDPMpp"]


class DDPMpp(NCSNpp):
    """DDPM++ (continuous CIFAR-10 defaults, 61.80M parameters): BigGAN residual blocks with
    nearest/average resampling, no input/output pyramid, skip rescaling, positional embedding.
    The deep variant is ``num_res_blocks=8`` (106.63M)."""

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
        fir: bool = False,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "none",
        progressive_combine: str = "sum",
        init_scale: float = 0.0,
        embedding_type: str = "positional",
        fourier_scale: float = 16.0,
        cond_input: str | None = None,
    ) -> None:
        super().__init__(
            image_size=image_size,
            channels=channels,
            nf=nf,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            dropout=dropout,
            resamp_with_conv=resamp_with_conv,
            conditional=conditional,
            fir=fir,
            fir_kernel=fir_kernel,
            skip_rescale=skip_rescale,
            resblock_type=resblock_type,
            progressive=progressive,
            progressive_input=progressive_input,
            progressive_combine=progressive_combine,
            init_scale=init_scale,
            embedding_type=embedding_type,
            fourier_scale=fourier_scale,
            cond_input=cond_input,
        )


class DDPM(NCSNpp):
    """The DDPM U-Net (Ho et al. 2020; CIFAR-10 defaults, 35.22M parameters).

    DDPM residual blocks, stand-alone nearest-upsample / strided-conv downsample layers, no skip
    rescaling, zero-initialised residual-branch outputs and a positional embedding. GroupNorm
    uses ``min(C // 4, 32)`` groups, i.e. DDPM's 32 groups for every width of 128 and more.
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        channels: int = 3,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        cond_input: str | None = None,
    ) -> None:
        super().__init__(
            image_size=image_size,
            channels=channels,
            nf=nf,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            dropout=dropout,
            resamp_with_conv=resamp_with_conv,
            conditional=conditional,
            fir=False,
            skip_rescale=False,
            resblock_type="ddpm",
            progressive="none",
            progressive_input="none",
            init_scale=0.0,
            embedding_type="positional",
            cond_input=cond_input,
        )
