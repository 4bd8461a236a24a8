"""Class labels in the image networks (NCSN++, DDPM++, DDPM, NCSN, NCSNv2, NCSNv2Deeper).

Without ``num_labels`` each network is the one it was before labels existed (same parameters,
same outputs); with ``num_labels = K`` it takes ``label=`` in [0, K] (K = no label), the
output depends on it sample by sample, a label outside that range is refused, and a labelled
network trains through the Hydra configs with label dropout.
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from run_helpers import bare_trainer, compose_cfg
from scorelab.lit.build import build_datamodule, build_module
from scorelab.nets.ddpm import DDPM, DDPMpp
from scorelab.nets.ncsnpp import NCSNpp
from scorelab.nets.refinenet import NCSN, NCSNv2, NCSNv2Deeper
from thread_helpers import one_thread  # noqa: F401

SDE_KW = dict(
    image_size=8, channels=1, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
    dropout=0.0,
)  # fmt: skip
NETS = {
    "ncsnpp": (NCSNpp, SDE_KW),
    "ddpmpp": (DDPMpp, SDE_KW),
    "ddpm": (DDPM, SDE_KW),
    "ncsn": (NCSN, dict(channels=1, image_size=16, ngf=8, num_classes=5)),
    "ncsnv2": (NCSNv2, dict(channels=1, image_size=16, ngf=8)),
    "ncsnv2_deeper": (NCSNv2Deeper, dict(channels=1, image_size=16, ngf=8)),
}

# Recorded from these networks as they were before they took labels (seed 0, the settings of
# NETS): number of state-dict entries, sha256 of their "name:shape" lines (first 16 hex
# digits), number of parameters, and sum |out| for the input and cond of `_input` (seed 1).
BEFORE = {
    "ncsnpp": (145, "416868e42e2b8b06", 189_953, 9.3699186712e-04),
    "ddpmpp": (142, "c297b131784abaa9", 188_769, 7.7188605459e-04),
    "ddpm": (122, "63e67bb1b58580c3", 172_561, 9.1073998353e-04),
    "ncsn": (173, "aefb2d56bb852abf", 129_945, 2.6129395273e02),
    "ncsnv2": (153, "b0a1e78514c7ee86", 117_033, 2.2071405545e02),
    "ncsnv2_deeper": (191, "4060aa81aa2a6e55", 327_689, 2.8280463591e02),
}


def _build(name: str, seed: int = 0, **extra) -> torch.nn.Module:
    cls, kw = NETS[name]
    torch.manual_seed(seed)
    return cls(**kw, **extra).eval()


def _waken(net: torch.nn.Module) -> torch.nn.Module:
    """Redraw every convolution and linear weight as N(0, 1/fan_in). NCSN++ and DDPM start
    their residual branches and output layer at ~1e-10 (init_scale 0), which hides every
    conditioning input at initialisation; a trained network has no such zeros."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                w = m.weight
                w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(w[0].numel()))
    return net


def _input(name: str, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """x (batch, C, H, W) from seed 1 and a cond of the kind each network reads."""
    kw = NETS[name][1]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, kw["channels"], kw["image_size"], kw["image_size"], generator=g)
    levels = {"ncsn": [0, 3], "ncsnpp": [0.5, 2.0]}.get(name, [10.0, 500.0])  # index, σ, 999·t
    return x, torch.tensor(levels * (batch // 2))


@pytest.mark.parametrize("name", list(NETS))
def test_without_labels_the_network_is_unchanged(name):
    """num_labels=None (the default, as in conf/model/*.yaml): the state-dict entries, their
    shapes, the parameter count and the output of the network before labels existed."""
    n_keys, digest, n_params, out_abs = BEFORE[name]
    for net in (_build(name), _build(name, num_labels=None)):
        sd = net.state_dict()
        lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
        assert len(sd) == n_keys
        assert hashlib.sha256(lines.encode()).hexdigest()[:16] == digest
        assert sum(p.numel() for p in net.parameters()) == n_params
        assert net.num_labels is None and not any("label" in k for k in sd)
        with torch.no_grad():
            out = net(*_input(name))
        assert math.isclose(out.double().abs().sum().item(), out_abs, rel_tol=1e-4)


@pytest.mark.parametrize("name", list(NETS))
def test_labels_change_the_output_sample_by_sample(name):
    """K = 3: one input, each label gives its own output; label=None is the null label K; and
    each sample of a mixed batch gets the output of its own label."""
    k = 3
    net = _waken(_build(name, num_labels=k))
    x1, c1 = _input(name, batch=2)
    x = x1[:1].expand(k + 1, -1, -1, -1)
    cond = c1[:1].expand(k + 1)
    with torch.no_grad():
        outs = net(x, cond, label=torch.arange(k + 1))  # classes 0, 1, 2 and ∅
        null = net(x[:1], cond[:1], label=None)
        null_int = net(x[:1], cond[:1], label=k)  # a plain int, broadcast over the batch
        singles = torch.cat([net(x[:1], cond[:1], label=torch.tensor([y])) for y in range(k + 1)])
    scale = outs.abs().max()
    for i in range(k + 1):
        for j in range(i):
            assert (outs[i] - outs[j]).abs().max() > 1e-2 * scale, (i, j)
    # equal up to float rounding (batches of 1 and of 4 may take other kernels): 100x below
    # the smallest difference between two labels allowed above
    close = dict(rtol=0.0, atol=1e-4 * scale)
    torch.testing.assert_close(null, outs[k:], **close)
    torch.testing.assert_close(null_int, outs[k:], **close)
    torch.testing.assert_close(singles, outs, **close)


@pytest.mark.parametrize("name", list(NETS))
def test_a_label_outside_the_classes_is_refused(name):
    k = 3
    net = _build(name, num_labels=k)
    x, cond = _input(name)
    for bad in (k + 1, -1):
        with pytest.raises(ValueError, match=rf"^label {bad} is outside \[0, 3\] \(.*3 = no label"):
            net(x, cond, label=torch.tensor([0, bad]))
    with pytest.raises(ValueError) as err:
        net(x, cond, label=torch.tensor([7, 1]))
    assert "\n" not in str(err.value) and "model.net.num_labels" in str(err.value)
    # a network built without labels refuses any label
    plain = _build(name)
    with pytest.raises(ValueError, match=r"built without labels \(num_labels=null\)"):
        plain(x, cond, label=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"num_labels=0 must be null \(unconditional\)"):
        _build(name, num_labels=0)


# A tiny NCSN++ on MNIST-shaped data (28 px, two levels) and a tiny NCSNv2.
TINY = {
    "ncsnpp": [
        "model=ncsnpp", "model.net.nf=16", "model.net.ch_mult=[1,2]", "model.net.num_res_blocks=1",
        "model.net.attn_resolutions=[14]", "model.net.dropout=0.0",
    ],
    "ncsnv2": ["model=ncsnv2", "model.net.ngf=8"],
}  # fmt: skip


@pytest.mark.parametrize("name", list(TINY))
def test_a_labelled_image_network_trains_with_label_dropout(name, tmp_path, mnist_root):
    """data=mnist with data.labels=true and model.net.num_labels=10 through the configs: the
    network gets each batch's digits (the fixture's digit of image i is i mod 10) with about
    half of them (module.label_dropout=0.5) replaced by the null label 10, and the rows of
    the label embedding that were seen move."""
    p, steps, batch = 0.5, 3, 32
    overrides = [
        "data=mnist", f"paths.data_dir={mnist_root}", "data.labels=true", "data.random_flip=false",
        f"data.batch_size={batch}", "model.net.num_labels=10", f"module.label_dropout={p}",
        "sde.sigma_max=50.0", "trainer.accelerator=cpu", *TINY[name],
    ]  # fmt: skip
    cfg = compose_cfg("train", overrides, tmp_path)
    module, dm = build_module(cfg), build_datamodule(cfg)
    net = module.model.net
    assert net.num_labels == 10 and module.num_labels == 10
    seen: list[torch.Tensor] = []
    net.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["label"].detach().clone()), with_kwargs=True
    )
    before = net.label_embed.table.weight.detach().clone()
    bare_trainer(steps).fit(module, datamodule=dm)
    labels = torch.cat(seen)
    assert len(seen) == steps and labels.shape == (steps * batch,)
    assert 0 <= int(labels.min()) and int(labels.max()) <= 10
    n = labels.numel()
    dropped = (labels == 10).float().mean().item()
    assert abs(dropped - p) < 4 * math.sqrt(p * (1 - p) / n)
    # the kept labels are the fixture's digits: every batch of 32 of its 64 images holds
    # each digit 3 or 4 times
    kept = labels[labels != 10]
    assert set(kept.tolist()) <= set(range(10)) and len(set(kept.tolist())) >= 8
    moved = (net.label_embed.table.weight.detach() - before).abs().sum(1)
    for y in labels.unique().tolist():
        assert moved[y] > 0, y
