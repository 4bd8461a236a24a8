"""The paper experiments carry the papers' hyperparameters.

Every expected value below is written out from ../shared/REFERENCE.md (the papers and their
official configs), not read from our configs; the section of the reference is named on each
row. A config that drifts from the paper fails here with the key and both values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from run_helpers import compose_cfg
from thread_helpers import one_torch_thread

# NCSN (Song & Ermon 2019): "Schedule" and "Network": geometric σ 1 → 0.01, L = 10; Adam lr
# 1e-3, batch 128, 200k iterations, no EMA; uniform dequantization; RefineNet, input 2x - 1,
# ngf 64 (MNIST, ~7.6M) or 128 (CIFAR-10, ~30.1M); Algorithm 1: T = 100 per level, uniform
# start, no final denoising. The Langevin step size (ε = 2e-5 in the paper, step_lr = ε/2 in
# the official runner) is left out: its config value is being aligned with the runner.
NCSN = {
    "sde.sigma_max": 1.0,
    "sde.sigma_min": 0.01,
    "sde.num_scales": 10,
    "optimizer.lr": 1e-3,
    "data.batch_size": 128,
    "trainer.max_steps": 200_000,
    "module.ema_decay": 0.0,
    "data.dequantize": True,
    "model.net.rescale_input": True,
    "sampler.n_steps_each": 100,
    "init.kind": "uniform",
    "init.low": 0.0,
    "init.high": 1.0,
    "sampler.final_denoise": False,
}
# NCSNv2 (Song & Ermon 2020): "Official configs" table (σ_1, L, T, step_lr, batch,
# iterations), σ_L = 0.01 and lr 1e-4 throughout, EMA 0.999 (technique 5), final Tweedie
# denoising; the CIFAR-10 network has ~29.7M parameters.
NCSNV2 = {
    "sde.sigma_min": 0.01,
    "optimizer.lr": 1e-4,
    "module.ema_decay": 0.999,
    "sampler.final_denoise": True,
    "data.batch_size": 128,
}
# Score SDE (Song et al. 2021): "Loss and training" (Adam 2e-4, 5k warm-up, clip 1, batch
# 128, 1.3M iterations, dropout 0.1, training ε 1e-5; VE sums, VP means; EMA 0.999 VE, 0.9999
# VP), "SDEs" (N = 1000; VE σ 0.01 → 50 on CIFAR-10; VP/subVP β 0.1 → 20), "Networks"
# (NCSN++ cont. nf 128, ch_mult (1,2,2,2), 4 res blocks, attention at 16², FIR [1,3,3,1],
# Fourier scale 16, ~62.8M; DDPM++ ~61.8M), "Predictor-corrector" (snr 0.16 for CIFAR-10 VE).
SCORE_SDE = {
    "optimizer.lr": 2e-4,
    "module.warmup_steps": 5000,
    "module.grad_clip": 1.0,
    "data.batch_size": 128,
    "trainer.max_steps": 1_300_000,
    "model.net.dropout": 0.1,
    "loss.eps": 1e-5,
    "sde.N": 1000,
}
VP = {
    "sde.beta_min": 0.1,
    "sde.beta_max": 20.0,
    "module.ema_decay": 0.9999,
    "loss.reduce": "mean",
    "data.scaling": "minus_one_one",
}

PAPER = {
    "ncsn_mnist": {**NCSN, "model.net.ngf": 64},
    "ncsn_cifar10": {**NCSN, "model.net.ngf": 128},
    "ncsnv2_cifar10": {
        **NCSNV2,
        "sde.sigma_max": 50.0,
        "sde.num_scales": 232,
        "sampler.n_steps_each": 5,
        "sampler.step_lr": 6.2e-6,
        "trainer.max_steps": 300_000,
    },
    "ncsnv2_celeba": {
        **NCSNV2,
        "data.image_size": 64,
        "sde.sigma_max": 90.0,
        "sde.num_scales": 500,
        "sampler.n_steps_each": 5,
        "sampler.step_lr": 3.3e-6,
        "trainer.max_steps": 210_000,
    },
    "ncsnpp_cifar10_ve": {
        **SCORE_SDE,
        "sde.sigma_min": 0.01,
        "sde.sigma_max": 50.0,
        "module.ema_decay": 0.999,
        "loss.reduce": "sum",
        "sampler.corrector.snr": 0.16,
        "model.net.nf": 128,
        "model.net.ch_mult": [1, 2, 2, 2],
        "model.net.num_res_blocks": 4,
        "model.net.attn_resolutions": [16],
        "model.net.fir_kernel": [1, 3, 3, 1],
        "model.net.fourier_scale": 16,
    },
    "ddpmpp_cifar10_vp": {**SCORE_SDE, **VP},
    "ddpmpp_cifar10_subvp": {**SCORE_SDE, **VP},
}
# Parameters of the network, in millions to the reference's one decimal ("Network" sections;
# the reference gives none for NCSNv2 on CelebA).
PARAMS_M = {
    "ncsn_mnist": 7.6,
    "ncsn_cifar10": 30.1,
    "ncsnv2_cifar10": 29.7,
    "ncsnpp_cifar10_ve": 62.8,
    "ddpmpp_cifar10_vp": 61.8,
    "ddpmpp_cifar10_subvp": 61.8,
}
# NCSN and NCSNv2: discrete geometric levels; score SDE: the continuous process of the row.
LEVELS = "scorelab.sde.NoiseLevels"
SDE_TARGET = {
    "ncsn_mnist": LEVELS,
    "ncsn_cifar10": LEVELS,
    "ncsnv2_cifar10": LEVELS,
    "ncsnv2_celeba": LEVELS,
    "ncsnpp_cifar10_ve": "scorelab.sde.VESDE",
    "ddpmpp_cifar10_vp": "scorelab.sde.VPSDE",
    "ddpmpp_cifar10_subvp": "scorelab.sde.subVPSDE",
}


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node.item() if hasattr(node, "item") else node


@pytest.mark.parametrize("name", list(PAPER))
def test_experiment_has_the_papers_hyperparameters(name: str, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = compose_cfg("train", [f"experiment={name}"], tmp_path)
    wrong = []
    for key, want in PAPER[name].items():
        got = _get(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        same = got == pytest.approx(want) if isinstance(want, float) else got == want
        if not same:
            wrong.append(f"{key}: config {got!r}, paper {want!r}")
    assert wrong == [], f"{name}: " + "; ".join(wrong)
    # One optimizer step sees the paper's batch (no gradient accumulation by default).
    assert cfg.module.accumulate_grad_batches == 1
    assert cfg.sde._target_ == SDE_TARGET[name]


@pytest.mark.parametrize("name", list(PARAMS_M))
def test_network_size_matches_the_paper(name: str, tmp_path: Path) -> None:
    cfg = compose_cfg("train", [f"experiment={name}"], tmp_path)
    with one_torch_thread():
        net = instantiate(cfg.model.net)
    count = sum(p.numel() for p in net.parameters())
    assert round(count / 1e6, 1) == PARAMS_M[name], f"{name}: {count} parameters"


def test_every_paper_experiment_is_in_the_table() -> None:
    from scorelab.runs import CONF_DIR

    have = {p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml")}
    # The toys, the demo recipes (plain, VP, class-conditional) and the demo's noise-conditional
    # classifier are ours, not a paper's.
    ours = {"toy_gmm", "toy_gmm_energy", "mnist_demo", "mnist_demo_vp", "mnist_cond"}
    assert have - ours - {"mnist_classifier", "cifar10_classifier"} == set(PAPER)
