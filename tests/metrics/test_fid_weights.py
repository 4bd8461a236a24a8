"""The TorchScript -> torch-fidelity Inception key map, on synthetic tensors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from scorelab.metrics.fid_weights import N_CONV_LAYERS, _skeleton, build_state_dict


def _script_like_state(target: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """A state dict laid out like the TorchScript file: per layer weight, beta, mean, var."""
    blocks = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    g = torch.Generator().manual_seed(0)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, b in enumerate(blocks):
        c = target[f"{b}.bn.bias"].shape[0]
        out[f"layers.l{i}.weight"] = torch.randn(target[f"{b}.conv.weight"].shape, generator=g)
        out[f"layers.l{i}.beta"] = torch.randn(c, generator=g)
        out[f"layers.l{i}.mean"] = torch.randn(c, generator=g)
        out[f"layers.l{i}.var"] = torch.rand(c, generator=g) + 0.5
    return out


def test_layers_map_in_order_with_unit_scale_and_nan_classifier():
    target = _skeleton().state_dict()
    src = _script_like_state(target)
    assert len(src) == 4 * N_CONV_LAYERS
    out = build_state_dict(src)
    assert list(out) == list(target)
    torch.testing.assert_close(out["Conv2d_1a_3x3.conv.weight"], src["layers.l0.weight"])
    torch.testing.assert_close(out["Mixed_7c.branch_pool.bn.bias"], src["layers.l93.beta"])
    torch.testing.assert_close(out["Mixed_7c.branch_pool.bn.running_var"], src["layers.l93.var"])
    assert torch.all(out["Mixed_5b.branch1x1.bn.weight"] == 1)
    assert torch.isnan(out["fc.weight"]).all() and torch.isnan(out["fc.bias"]).all()


def test_a_layer_out_of_order_is_caught_by_shape():
    target = _skeleton().state_dict()
    src = _script_like_state(target)
    items = list(src.items())
    items[0:4], items[4:8] = items[4:8], items[0:4]  # swap the first two layers
    with pytest.raises(RuntimeError, match="shape mismatch"):
        build_state_dict(OrderedDict(items))
