"""Map official score_sde_pytorch checkpoints onto :mod:`scorelab.nets` score SDE networks.

An official checkpoint ``checkpoint_<n>.pth`` is a dict with

* ``'model'``: the ``state_dict`` of the official ``NCSNpp`` / ``DDPM`` module wrapped in
  ``DataParallel`` (keys ``module.sigmas``, ``module.all_modules.<i>.<...>``);
* ``'ema'``: ``{'decay', 'num_updates', 'shadow_params'}``, where ``shadow_params`` is a list
  holding one tensor per *trainable* parameter of the official model, in
  ``model.parameters()`` order;
* ``'optimizer'`` and ``'step'`` (not needed for the network).

The official model keeps every layer in one flat ``all_modules`` list, in the order the forward
pass uses them. :func:`official_parameter_layout` walks our nested modules in that same order
(embedding, dense layers, input conv, then each encoder level: residual blocks each followed by
its attention, the down-sampler and the input-pyramid module; the bottleneck; each decoder
level: residual blocks, attention, output-pyramid modules, the up-sampler; the output norm and
conv) and yields, for each official parameter, its name, shape and the parameter of ours it
fills. That ordered list is also the official ``model.parameters()`` order, so the i-th EMA
shadow tensor belongs to the i-th trainable entry of the layout (the frozen Fourier frequencies
``all_modules.0.W`` have ``requires_grad=False`` and are not in ``shadow_params``).

Layout differences handled here: official 1×1 "NIN" weights ``W`` are ``(in, out)`` and become
``(out, in, 1, 1)`` convolution weights; the attention's three NIN layers ``NIN_0/1/2`` (q, k,
v) are stacked into one ``qkv`` convolution; the ``sigmas`` buffer is dropped (our networks are
raw).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scorelab.conversion.ncsn import strip_prefix
from scorelab.nets.layers_sde import (
    AttnBlock,
    Combine,
    Downsample,
    ResnetBlockBigGAN,
    ResnetBlockDDPM,
    Upsample,
)
from scorelab.nets.ncsnpp import NCSNpp

__all__ = [
    "OfficialParam",
    "convert_score_sde_checkpoint",
    "convert_score_sde_ema",
    "convert_score_sde_state_dict",
    "official_parameter_layout",
]

_DROPPED_BUFFERS = ("sigmas",)


@dataclass(frozen=True)
class OfficialParam:
    """One official parameter: its name, shape, whether it is trainable, and where it goes.

    ``transform`` is ``"copy"``, ``"nin"`` (``(in, out)`` → ``(out, in, 1, 1)``) or
    ``"part<i>"`` (the i-th of the q, k, v chunks along dim 0 of ``ours``, NIN-transposed for
    weights).
    """

    name: str
    shape: tuple[int, ...]
    trainable: bool
    ours: str
    transform: str = "copy"


def _official_shape(our: Tensor, transform: str) -> tuple[int, ...]:
    if transform == "copy":
        return tuple(our.shape)
    if transform == "nin":
        return (our.shape[1], our.shape[0])
    c = our.shape[0] // 3  # part<i> of a stacked qkv weight (3C, C, 1, 1) or bias (3C,)
    return (our.shape[1], c) if our.ndim == 4 else (c,)


def _pairs(prefix: str, ours: str, names: Sequence[str]) -> Iterator[tuple[str, str, str]]:
    for name in names:
        for suffix in ("weight", "bias"):
            yield f"{prefix}.{name}.{suffix}", f"{ours}.{_OUR_NAME[name]}.{suffix}", "copy"


_OUR_NAME = {
    "GroupNorm_0": "norm0",
    "Conv_0": "conv0",
    "Dense_0": "dense",
    "GroupNorm_1": "norm1",
    "Conv_1": "conv1",
    "Conv_2": "skip",
}


def _module_entries(prefix: str, ours: str, module: nn.Module) -> Iterator[tuple[str, str, str]]:
    """(official name, our name, transform) for one element of the official ``all_modules``."""
    if isinstance(module, (ResnetBlockBigGAN, ResnetBlockDDPM)):
        names = ["GroupNorm_0", "Conv_0"] + (["Dense_0"] if module.dense is not None else [])
        yield from _pairs(prefix, ours, names + ["GroupNorm_1", "Conv_1"])
        if module.skip is not None:
            if isinstance(module, ResnetBlockBigGAN):
                yield from _pairs(prefix, ours, ["Conv_2"])
            else:
                yield f"{prefix}.NIN_0.W", f"{ours}.skip.weight", "nin"
                yield f"{prefix}.NIN_0.b", f"{ours}.skip.bias", "copy"
    elif isinstance(module, AttnBlock):
        yield f"{prefix}.GroupNorm_0.weight", f"{ours}.norm.weight", "copy"
        yield f"{prefix}.GroupNorm_0.bias", f"{ours}.norm.bias", "copy"
        for i in range(3):
            yield f"{prefix}.NIN_{i}.W", f"{ours}.qkv.weight", f"part{i}"
            yield f"{prefix}.NIN_{i}.b", f"{ours}.qkv.bias", f"part{i}"
        yield f"{prefix}.NIN_3.W", f"{ours}.proj.weight", "nin"
        yield f"{prefix}.NIN_3.b", f"{ours}.proj.bias", "copy"
    elif isinstance(module, (Upsample, Downsample)):
        if module.conv is not None:
            name = "Conv2d_0" if module.fir else "Conv_0"
            yield f"{prefix}.{name}.weight", f"{ours}.conv.weight", "copy"
            yield f"{prefix}.{name}.bias", f"{ours}.conv.bias", "copy"
    elif isinstance(module, Combine):
        yield f"{prefix}.Conv_0.weight", f"{ours}.conv.weight", "copy"
        yield f"{prefix}.Conv_0.bias", f"{ours}.conv.bias", "copy"
    elif isinstance(module, (nn.Conv2d, nn.Linear, nn.GroupNorm)):
        yield f"{prefix}.weight", f"{ours}.weight", "copy"
        yield f"{prefix}.bias", f"{ours}.bias", "copy"
    else:
        raise TypeError(f"no official counterpart known for {type(module).__name__} at {ours}")


def _official_modules(net: NCSNpp) -> Iterator[tuple[str, nn.Module]]:
    """Our modules (dotted name, module) in the order of the official ``all_modules`` list."""
    if net.temb is not None:
        yield "temb.0", net.temb[0]
        yield "temb.2", net.temb[2]
    yield "conv_in", net.conv_in
    for i, level in enumerate(net.down):
        for j, block in enumerate(level.blocks):
            yield f"down.{i}.blocks.{j}", block
            if len(level.attns):
                yield f"down.{i}.attns.{j}", level.attns[j]
        for name in ("downsample", "pyramid"):
            if getattr(level, name) is not None:
                yield f"down.{i}.{name}", getattr(level, name)
    yield "mid_block0", net.mid_block0
    yield "mid_attn", net.mid_attn
    yield "mid_block1", net.mid_block1
    for i, level in enumerate(net.up):
        for j, block in enumerate(level.blocks):
            yield f"up.{i}.blocks.{j}", block
        for name in ("attn", "pyramid_norm", "pyramid_conv", "pyramid_up", "upsample"):
            if getattr(level, name) is not None:
                yield f"up.{i}.{name}", getattr(level, name)
    if net.norm_out is not None:
        yield "norm_out", net.norm_out
        yield "conv_out", net.conv_out


def official_parameter_layout(net: NCSNpp) -> list[OfficialParam]:
    """The official model's parameters for the architecture of ``net``, in
    ``model.parameters()`` order, each with the name of the entry of ``net.state_dict()`` that
    it fills.

    Args:
        net: an :class:`~scorelab.nets.ncsnpp.NCSNpp` (also ``DDPMpp`` / ``DDPM``).
    """
    ours = net.state_dict()
    out: list[OfficialParam] = []
    index = 0
    if net.fourier is not None:
        out.append(
            OfficialParam("all_modules.0.W", tuple(ours["fourier.W"].shape), False, "fourier.W")
        )
        index = 1
    for name, module in _official_modules(net):
        for official, our, transform in _module_entries(f"all_modules.{index}", name, module):
            shape = _official_shape(ours[our], transform)
            out.append(OfficialParam(official, shape, True, our, transform))
        index += 1
    return out


def convert_score_sde_state_dict(
    official_model_sd: Mapping[str, Tensor], net: NCSNpp
) -> dict[str, Tensor]:
    """Convert an official ``state_dict`` (checkpoint ``'model'``) to ``net``'s layout.

    The ``module.`` prefix is stripped and the ``sigmas`` buffer dropped.

    Args:
        official_model_sd: official keys → tensors, with or without the ``module.`` prefix.
        net: the target network; its architecture must match the checkpoint's config.

    Returns:
        A dict that ``net.load_state_dict(..., strict=True)`` accepts.

    Raises:
        ValueError: listing missing and unexpected official keys and shape mismatches.
    """
    sd = strip_prefix(official_model_sd)
    for k in _DROPPED_BUFFERS:
        sd.pop(k, None)
    layout = official_parameter_layout(net)
    expected = {p.name for p in layout}
    missing = [p.name for p in layout if p.name not in sd]
    unexpected = sorted(set(sd) - expected)
    mismatched = [
        f"{p.name}: checkpoint {tuple(sd[p.name].shape)} != expected {p.shape}"
        for p in layout
        if p.name in sd and tuple(sd[p.name].shape) != p.shape
    ]
    if missing or unexpected or mismatched:

        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" … ({len(items)} in all)" if len(items) > 8 else "")

        raise ValueError(
            "official checkpoint does not match the network architecture: "
            f"missing keys [{show(missing)}]; unexpected keys [{show(unexpected)}]; "
            f"shape mismatches [{show(mismatched)}]. Build the network with the keyword "
            "arguments of the checkpoint's config (nf, ch_mult, num_res_blocks, "
            "attn_resolutions, fir, resblock_type, progressive*, embedding_type)."
        )

    out: dict[str, Tensor] = {}
    parts: dict[str, list[Tensor]] = {}
    for p in layout:
        t = sd[p.name].detach()
        if p.transform == "copy":
            out[p.ours] = t.clone()
        elif p.transform == "nin":
            out[p.ours] = t.t().reshape(*t.shape[::-1], 1, 1).clone()
        else:  # q, k, v chunks of the fused attention projection, in order
            parts.setdefault(p.ours, []).append(t.t()[..., None, None] if t.ndim == 2 else t)
    for name, chunks in parts.items():
        out[name] = torch.cat(chunks, dim=0).contiguous()
    return out


def convert_score_sde_ema(
    shadow_params: Sequence[Tensor],
    net: NCSNpp,
    *,
    official_model_sd: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Convert the official EMA weights (``ckpt['ema']['shadow_params']``) to ``net``'s layout.

    ``shadow_params[i]`` is the i-th trainable parameter of the official model, i.e. the i-th
    entry of :func:`official_parameter_layout` with ``trainable=True``. The frozen Gaussian
    Fourier frequencies are not averaged, so for a Fourier-embedding network they are taken
    from ``official_model_sd`` (the checkpoint's ``'model'``), which is then required.

    Returns:
        A dict that ``net.load_state_dict(..., strict=True)`` accepts.

    Raises:
        ValueError: wrong number of shadow tensors, missing frozen parameters, or shape
            mismatches.
    """
    layout = official_parameter_layout(net)
    trainable = [p for p in layout if p.trainable]
    if len(shadow_params) != len(trainable):
        raise ValueError(
            f"shadow_params has {len(shadow_params)} tensors but the network's official layout "
            f"has {len(trainable)} trainable parameters; build the network with the "
            "checkpoint's config."
        )
    sd: dict[str, Tensor] = {p.name: t for p, t in zip(trainable, shadow_params)}
    frozen = [p.name for p in layout if not p.trainable]
    if frozen:
        if official_model_sd is None:
            raise ValueError(
                f"the EMA holds only trainable parameters, but {frozen} are frozen buffers of "
                "the official model; pass official_model_sd=checkpoint['model']."
            )
        model_sd = strip_prefix(official_model_sd)
        for name in frozen:
            if name not in model_sd:
                raise ValueError(f"official_model_sd lacks the frozen parameter {name!r}.")
            sd[name] = model_sd[name]
    return convert_score_sde_state_dict(sd, net)


def convert_score_sde_checkpoint(
    checkpoint: Mapping[str, object], net: NCSNpp, *, use_ema: bool = True
) -> dict[str, Tensor]:
    """Convert a loaded official ``checkpoint_*.pth`` dict; EMA weights by default (those are
    the ones the paper samples with)."""
    model_sd = checkpoint["model"]
    if use_ema:
        return convert_score_sde_ema(
            checkpoint["ema"]["shadow_params"], net, official_model_sd=model_sd
        )
    return convert_score_sde_state_dict(model_sd, net)
