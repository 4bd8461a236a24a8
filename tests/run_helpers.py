"""Compose run configs in-process, the way the entry points do, with small toy settings; run
the entry points as subprocesses of this checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from scorelab.runs import CONF_DIR

REPO = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """This environment with the checkout's ``src`` first on ``PYTHONPATH``, for
    ``python -m scorelab.<entry point>`` subprocesses."""
    src = str(REPO / "src")
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": src if not path else f"{src}{os.pathsep}{path}"}


def run_command(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``cmd`` (an entry point of this checkout) to its end in the repository root, in
    :func:`subprocess_env` unless ``env`` is given; stdout and stderr captured as text."""
    return subprocess.run(
        cmd,
        cwd=REPO,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Small, fast settings for toy training runs in tests (CLI overrides).
TOY_FAST = [
    "model.net.hidden=32",
    "model.net.n_layers=2",
    "data.n_train=512",
    "data.n_val=256",
    "data.batch_size=64",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.progress=null",
]


def compose_cfg(config_name: str, overrides: list[str], out: Path) -> DictConfig:
    """``config_name`` with ``overrides``; run outputs, logs and caches under ``out``."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            config_name,
            overrides=[
                *overrides,
                f"paths.output_dir={out}",
                f"paths.log_dir={out}/logs",
                f"paths.cache_dir={out}/cache",
            ],
        )


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


def adam_step_trains_all(net, x, cond) -> dict:
    """One Adam step of ``net(x, cond)`` regressed on noise: every parameter gets a finite
    gradient and changes. Returns the gradients by parameter name."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    loss = (net(x, cond) - torch.randn_like(x)).square().mean()
    opt.zero_grad()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
    return {name: p.grad for name, p in net.named_parameters()}


def bare_trainer(max_steps: int, **kwargs):
    """A CPU Lightning Trainer with nothing around the loop: no logger, progress bar, model
    summary, validation or (unless ``kwargs`` say otherwise) checkpointing."""
    import lightning as L

    settings = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        **kwargs,
    }
    return L.Trainer(max_steps=max_steps, **settings)


# The data config of NCSN's toy mixture, 0.2 N((-5,-5), I) + 0.8 N((5,5), I), as a DataModule
# config for the metric suite.
NCSN_GMM_DATA = {
    "_target_": "scorelab.data.toy.ToyDataModule",
    "name": "gmm",
    "weights": [0.2, 0.8],
    "means": [[-5.0, -5.0], [5.0, 5.0]],
    "stds": [1.0, 1.0],
    "dim": 2,
}


def sampler_of(name: str, *overrides: str):
    """The :class:`scorelab.draw.Sampler` that ``sampler=name`` and ``overrides`` (``schedule.*``,
    ``init.*``, ``sampler.*``) build through the real configs."""
    from scorelab.lit.build import sampler_from_config

    return sampler_from_config(name, *overrides)
