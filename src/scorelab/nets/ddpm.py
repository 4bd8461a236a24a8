"""DDPM++ and DDPM U-Nets (Song et al. 2021; Ho et al. 2020) as configurations of NCSN++.

Both take the keyword arguments of :class:`scorelab.nets.ncsnpp.NCSNpp` (see there for the
layout, ``cond_input`` and ``num_labels``) with a positional embedding of ``cond`` (by default
``999·t``, or DDPM's integer step), and differ from it only in their defaults (DDPM++) or in
arguments they fix (DDPM).
"""

from __future__ import annotations

from typing import Any

from scorelab.nets.ncsnpp import NCSNpp

__all__ = ["DDPM", "DDPMpp"]

#: DDPM++'s defaults where they differ from NCSN++'s.
DDPMPP_DEFAULTS: dict[str, Any] = {
    "fir": False,
    "progressive_input": "none",
    "embedding_type": "positional",
}
#: DDPM's default depth; the rest of its layout is fixed (:data:`DDPM_FIXED`).
DDPM_DEFAULTS: dict[str, Any] = {"num_res_blocks": 2}
DDPM_FIXED: dict[str, Any] = {
    "fir": False,
    "skip_rescale": False,
    "resblock_type": "ddpm",
    "progressive": "none",
    "progressive_input": "none",
    "init_scale": 0.0,
    "embedding_type": "positional",
    # Unused by this layout; fixed so that passing them is an error rather than a no-op.
    "fir_kernel": (1, 3, 3, 1),
    "progressive_combine": "sum",
    "fourier_scale": 16.0,
}


class DDPMpp(NCSNpp):
    """DDPM++ (continuous CIFAR-10 defaults, 61.80M parameters): BigGAN residual blocks with
    nearest/average resampling, no input/output pyramid, skip rescaling, positional embedding.
    The deep variant is ``num_res_blocks=8`` (106.63M)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**DDPMPP_DEFAULTS, **kwargs})


class DDPM(NCSNpp):
    """The DDPM U-Net (Ho et al. 2020; CIFAR-10 defaults, 35.22M parameters).

    DDPM residual blocks, stand-alone nearest-upsample / strided-conv downsample layers, no skip
    rescaling, zero-initialised residual-branch outputs and a positional embedding. GroupNorm
    uses ``min(C // 4, 32)`` groups, i.e. DDPM's 32 groups for every width of 128 and more.
    The arguments of :data:`DDPM_FIXED` are refused (use :class:`NCSNpp` to change them).
    """

    def __init__(self, **kwargs: Any) -> None:
        fixed = sorted(set(kwargs) & set(DDPM_FIXED))
        if fixed:
            raise TypeError(f"DDPM fixes {fixed}; use scorelab.nets.ncsnpp.NCSNpp to set them")
        super().__init__(**{**DDPM_DEFAULTS, **kwargs, **DDPM_FIXED})
