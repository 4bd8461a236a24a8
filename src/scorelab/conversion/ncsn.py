"""Map official NCSN / NCSNv2 checkpoints onto `scorelab.nets.refinenet`.

Official checkpoint layouts:

- ermongroup/ncsn `checkpoint.pth`: `[model_state, optim_state]`; the model was wrapped in
  `nn.DataParallel`, so every key starts with `module.`.
- ermongroup/ncsnv2 `checkpoint.pth`: `[model_state, optim_state, epoch, step, ema_state]`;
  `model_state` has the `module.` prefix and a `sigmas` buffer (L,), `ema_state` holds the
  EMA shadow of every parameter, without prefix and without buffers.

The converters rename keys, drop the `sigmas` buffer (our raw networks do not divide by σ; read
it with `official_sigmas`), and check the result against the target network's state dict, so
that `net.load_state_dict(converted, strict=True)` cannot fail silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from scorelab.io import describe_state_mismatch

# Official -> scorelab names, applied to each dot-separated part.
_TOP = {"begin_conv": "stem", "end_conv": "out_conv", "normalizer": "out_norm"}
_PARTS = {
    "normalize1": "norm1",
    "normalize2": "norm2",
    "shortcut": "skip",
    "adapt_convs": "adapt",
    "output_convs": "out",
    "msf": "fuse",
    "crp": "pool",
    "embed": "embedding",
}
_NORM_PARAMS = {"gamma": "weight", "beta": "bias", "alpha": "alpha"}
_RCU = re.compile(r"^(\d+)_(\d+)_(conv|norm)$")
_STAGE = re.compile(r"^res(\d+)$")
_REFINE = re.compile(r"^refine(\d+)$")
_RCU_STAGES = 2  # conv-unit stages per residual conv unit in every official RefineBlock
_BUFFERS = ("sigmas",)


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """Remove `prefix` from every key that has it (the `nn.DataParallel` wrapper)."""
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def official_key_to_scorelab(key: str, n_refine: int) -> str:
    """Rename one official RefineNet key (without `module.`) to our module layout.

    `n_refine` is the number of RefineBlocks (4 for NCSN/NCSNv2, 5 for NCSNv2Deeper); the
    official blocks `refine1..refineN` are our `decoder.0..N-1` in the same (deepest-first)
    order. Examples:

    - `res2.0.conv2.conv.weight` -> `encoder.1.0.conv2.weight` (ConvMeanPool's inner conv)
    - `refine3.adapt_convs.1.2_1_conv.weight` -> `decoder.2.adapt.1.convs.2.weight`
    - `res1.0.normalize1.gamma` -> `encoder.0.0.norm1.weight`
    """
    parts = key.split(".")
    out: list[str] = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if i == 0 and p in _TOP:
            out.append(_TOP[p])
        elif i == 0 and (m := _STAGE.match(p)):
            out += ["encoder", str(int(m.group(1)) - 1)]
        elif i == 0 and (m := _REFINE.match(p)):
            k = int(m.group(1))
            if not 1 <= k <= n_refine:
                out.append(p)  # left unmapped; reported as unexpected
            else:
                out += ["decoder", str(k - 1)]
        elif (m := _RCU.match(p)) is not None:
            b, s, kind = int(m.group(1)) - 1, int(m.group(2)) - 1, m.group(3)
            out += [kind + "s", str(b * _RCU_STAGES + s)]
        elif p in ("conv2", "shortcut") and i + 1 < len(parts) and parts[i + 1] == "conv":
            # ConvMeanPool wraps its conv as `.conv`; ours pools after a plain conv.
            out.append(_PARTS.get(p, p))
            i += 1
        elif i == len(parts) - 1 and p in _NORM_PARAMS:
            out.append(_NORM_PARAMS[p])
        else:
            out.append(_PARTS.get(p, p))
        i += 1
    return ".".join(out)


def _n_refine(net: nn.Module) -> int:
    decoder = getattr(net, "decoder", None)
    if not isinstance(decoder, nn.ModuleList):
        raise ValueError(
            f"net must be a scorelab.nets.refinenet network (NCSN, NCSNv2, NCSNv2Deeper), "
            f"got {type(net).__name__}"
        )
    return len(decoder)


def _convert(
    official: Mapping[str, Tensor], net: nn.Module, *, what: str, drop: Sequence[str]
) -> dict[str, Tensor]:
    n_refine = _n_refine(net)
    sd = strip_prefix(official)
    converted = {official_key_to_scorelab(k, n_refine): v for k, v in sd.items() if k not in drop}
    target = net.state_dict()
    problem = describe_state_mismatch(target, converted)
    if problem:
        raise ValueError(
            f"{what} does not fit {type(net).__name__}"
            f"(channels={getattr(net, 'channels', '?')}, ngf={getattr(net, 'ngf', '?')}, "
            f"num_classes={getattr(net, 'num_classes', None)}): "
            f"build the network with the checkpoint's channels, ngf and number of noise levels; "
            f"{problem}"
        )
    return {k: converted[k] for k in target}


def convert_ncsn_state_dict(official_sd: Mapping[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    """Official `CondRefineNetDilated` state dict (`states[0]`) -> state dict for `NCSN`.

    Returns a dict with exactly the keys and shapes of `net.state_dict()`; raises ValueError
    listing missing / unexpected keys and shape mismatches otherwise.
    """
    return _convert(official_sd, net, what="NCSN checkpoint", drop=())


def convert_ncsnv2_state_dict(
    official_sd: Mapping[str, Tensor], net: nn.Module
) -> dict[str, Tensor]:
    """Official `NCSNv2` / `NCSNv2Deeper` model state (`states[0]`) -> state dict for ours.

    The `sigmas` buffer is dropped (see `official_sigmas`).
    """
    return _convert(official_sd, net, what="NCSNv2 checkpoint", drop=_BUFFERS)


def convert_ncsnv2_ema_state_dict(
    ema_shadow: Mapping[str, Tensor], net: nn.Module
) -> dict[str, Tensor]:
    """Official NCSNv2 EMA shadow (`states[4]`, or `states[-1]`) -> state dict for ours."""
    return _convert(ema_shadow, net, what="NCSNv2 EMA state", drop=_BUFFERS)


def official_sigmas(official_sd: Mapping[str, Tensor]) -> Tensor:
    """The noise levels σ_1 > ... > σ_L stored as the `sigmas` buffer of an NCSNv2 model state."""
    sd = strip_prefix(official_sd)
    if "sigmas" not in sd:
        raise ValueError(
            "official_sd has no 'sigmas' buffer: pass the NCSNv2 model state (states[0]); "
            "NCSN checkpoints and EMA states do not store σ"
        )
    return sd["sigmas"]


def convert_ncsnv2_checkpoint(
    states: Sequence[Any], net: nn.Module, *, ema: bool = True
) -> dict[str, Tensor]:
    """Convert a loaded NCSNv2 `checkpoint.pth` list; the EMA weights when `ema` is True.

    `states` is `[model_state, optim_state, epoch, step]` plus `ema_state` when the run kept an
    EMA (all official NCSNv2 configs do).
    """
    if not isinstance(states, Sequence) or len(states) < 1:
        raise ValueError(
            "states must be the list stored in an NCSNv2 checkpoint.pth "
            "([model_state, optim_state, epoch, step, ema_state])"
        )
    if ema:
        if len(states) < 5:
            raise ValueError(
                f"ema=True but the checkpoint list has {len(states)} entries (< 5): it holds "
                "no EMA state; pass ema=False to use the raw weights"
            )
        return convert_ncsnv2_ema_state_dict(states[4], net)
    return convert_ncsnv2_state_dict(states[0], net)
