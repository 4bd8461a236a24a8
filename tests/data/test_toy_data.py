"""ToyDataModule: mixture and 2-D sets, seeded batches, resume inside a Lightning run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from run_helpers import bare_trainer
from scorelab.data.toy import ToyDataModule

NCSN_GMM = {"weights": [0.2, 0.8], "means": [[-5.0, -5.0], [5.0, 5.0]], "stds": [1.0, 1.0]}


def test_gmm_training_set_has_the_mixture_weights_and_means() -> None:
    dm = ToyDataModule("gmm", n_train=20_000, **NCSN_GMM)
    dm.setup()
    x = dm.train_data
    assert x.shape == (20_000, 2) and dm.dim == 2 and dm.channels is None
    low = x[:, 0] < 0
    assert abs(low.float().mean().item() - 0.2) < 0.012  # std error 0.0028
    assert torch.allclose(x[low].mean(0), torch.tensor([-5.0, -5.0]), atol=0.06)
    assert torch.allclose(x[~low].std(0), torch.ones(2), atol=0.03)
    assert dm.distribution is not None and dm.distribution.dim == 2


@pytest.mark.parametrize("name", ["two_moons", "swiss_roll", "checkerboard", "rings"])
def test_2d_sets(name: str) -> None:
    dm = ToyDataModule(name, n_train=2000, batch_size=100)
    dm.setup()
    assert dm.train_data.shape == (2000, 2) and torch.isfinite(dm.train_data).all()
    assert dm.val_data.shape == (4000, 2)
    assert not torch.equal(dm.train_data[:100], dm.val_data[:100])
    if name == "checkerboard":
        assert dm.train_data.abs().max() <= 2
    if name == "rings":
        r = dm.train_data.norm(dim=1)
        assert r.min() > 0.3 and r.max() < 2.3


def test_noise_option_reaches_the_generator() -> None:
    tight = ToyDataModule("rings", n_train=2000, noise=0.0)
    tight.setup()
    r = tight.train_data.norm(dim=1)
    nearest = (r[:, None] - torch.tensor([0.5, 1.0, 1.5, 2.0])).abs().min(1).values
    assert nearest.max() < 1e-5


def test_fixed_batches_are_rows_of_the_training_set_and_cover_it() -> None:
    dm = ToyDataModule("two_moons", n_train=512, batch_size=64, seed=3)
    dm.setup()
    batches = list(dm.train_dataloader())
    x = torch.cat(batches)
    assert len(batches) == 8
    assert torch.equal(x[x[:, 0].argsort()], dm.train_data[dm.train_data[:, 0].argsort()])


def test_resample_draws_fresh_seeded_batches() -> None:
    def stream(seed: int) -> list[torch.Tensor]:
        dm = ToyDataModule("gmm", n_train=256, batch_size=64, resample=True, seed=seed, **NCSN_GMM)
        loader = dm.train_dataloader()
        return list(loader) + list(loader)

    a, b, c = stream(0), stream(0), stream(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[4])  # epoch 1 differs from epoch 0
    assert len({tuple(r.tolist()) for r in torch.cat(a)}) == 8 * 64  # all distinct


def test_state_dict_resume() -> None:
    ref = ToyDataModule("swiss_roll", n_train=256, batch_size=64, resample=True)
    want = list(ref.train_dataloader()) + list(ref.train_dataloader())
    run = ToyDataModule("swiss_roll", n_train=256, batch_size=64, resample=True)
    it = iter(run.train_dataloader())
    next(it), next(it), next(it)
    state = run.state_dict()
    assert state["train_sampler"]["position"] == 3
    resumed = ToyDataModule("swiss_roll", n_train=256, batch_size=64, resample=True)
    resumed.load_state_dict(state)
    got = list(resumed.train_dataloader()) + list(resumed.train_dataloader())
    assert len(got) == 1 + 4
    assert all(torch.equal(x, y) for x, y in zip(got, want[3:]))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"name": "spiral"}, "name='spiral'"),
        ({"name": "gmm"}, "needs weights"),
        ({"name": "gmm", "dim": 3, **NCSN_GMM}, "dim=3 contradicts"),
        ({"name": "two_moons", "channels": 1}, "channels=1"),
        ({"name": "checkerboard", "noise": 0.1}, "checkerboard takes no noise"),
        ({"name": "rings", **NCSN_GMM}, "apply to name='gmm' only"),
        ({"name": "rings", "batch_size": 20_000}, "exceeds n_train"),
        ({"name": "gmm", "weights": [0.5, 0.6], "means": [[0.0], [1.0]]}, "sum to 1"),
    ],
)
def test_bad_arguments(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ToyDataModule(**kw)


class _Recorder(L.LightningModule):
    """Records every training batch; a one-parameter model so that steps are cheap."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.detach().clone())
        return ((batch - self.w) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(max_steps: int, ckpt_path: Path | None = None, save_to: Path | None = None) -> list:
    dm = ToyDataModule("gmm", n_train=256, batch_size=64, seed=5, **NCSN_GMM)
    model = _Recorder()
    trainer = bare_trainer(max_steps)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return model.seen


def test_lightning_resume_mid_epoch_replays_the_uninterrupted_batches(tmp_path: Path) -> None:
    full = _fit(10)  # 4 batches per epoch: epochs 0, 1 and half of 2
    ckpt = tmp_path / "step6.ckpt"
    first = _fit(6, save_to=ckpt)  # stops at epoch 1, batch 2
    state = torch.load(ckpt, weights_only=False)["ToyDataModule"]
    assert state["train_sampler"]["epoch"] == 1 and state["train_sampler"]["position"] == 2
    second = _fit(10, ckpt_path=ckpt)
    assert len(first) + len(second) == len(full) == 10
    assert all(torch.equal(a, b) for a, b in zip(first + second, full))


def test_epochs_are_never_empty_when_the_consumer_stops_after_len_batches():
    """Lightning takes exactly len() batches per epoch and never exhausts the generator; the next
    iter() must start the next epoch's batches, not yield an empty epoch."""
    from scorelab.data.batches import InMemoryBatches

    batches = InMemoryBatches(10, 5, lambda idx, g: idx, seed=0)
    seen = []
    for _ in range(3):
        it = iter(batches)
        seen.append([next(it) for _ in range(len(batches))])
    assert [len(e) for e in seen] == [2, 2, 2]
    assert batches.epoch == 2
    for epoch in seen:  # every epoch is a permutation of all ten examples
        assert sorted(int(i) for b in epoch for i in b) == list(range(10))
    assert [b.tolist() for b in seen[0]] != [b.tolist() for b in seen[1]]
