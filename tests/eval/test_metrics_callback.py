"""SampleMetrics: a toy run logs val/sliced_w2 and keeps the best checkpoint by it; statistics
come from the features of every rank's share."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import torch
from eval_helpers import TOY_TRAIN, compose_cfg

from run_helpers import NCSN_GMM_DATA as GMM
from scorelab.lit.metrics_callback import SampleMetrics, gather_features
from scorelab.metrics.suite import build_metric_suite
from scorelab.metrics.toy import sliced_wasserstein
from scorelab.toy import ncsn_toy_mixture

OPTIONS = {"toy": {"n_reference": 400, "n_projections": 64, "mmd_max_n": 400}}


def test_toy_run_logs_the_metric_keeps_the_best_checkpoint_and_evaluates_it(tmp_path):
    from scorelab.train import train

    out = tmp_path / "run"
    cfg = compose_cfg(
        "train",
        [
            *TOY_TRAIN,
            "callbacks=metrics",
            "trainer.max_steps=6",
            "trainer.val_check_interval=2",
            "callbacks.sample_metrics.n_samples=64",
            "callbacks.sample_grid=null",
            "+callbacks.sample_metrics.options.toy.n_reference=400",
            "sampler.n_steps_each=2",
            "schedule.num_scales=10",
            "n_samples=0",
        ],
        out,
    )
    train(cfg)
    rows = list(csv.DictReader(open(next(out.rglob("metrics.csv")))))
    logged = {int(r["step"]): float(r["val/sliced_w2"]) for r in rows if r.get("val/sliced_w2")}
    assert sorted(logged) == [2, 4, 6] and all(math.isfinite(v) and v > 0 for v in logged.values())
    best = list((out / "checkpoints").glob("best_sliced_w2_step_*.ckpt"))
    assert len(best) == 1
    best_step = min(logged, key=logged.get)
    assert best[0].name == f"best_sliced_w2_step_{best_step:07d}.ckpt"
    ckpt = torch.load(best[0], map_location="cpu", weights_only=False)
    state = next(
        v for k, v in ckpt["callbacks"].items() if "val/sliced_w2" in k and "ModelCheckpoint" in k
    )
    assert abs(float(state["best_model_score"]) - logged[best_step]) < 1e-5
    # The best checkpoint evaluated with another sampler than the one it was trained with.
    from scorelab.evaluate import evaluate

    ev = tmp_path / "eval"
    evaluate(
        compose_cfg(
            "evaluate",
            [
                f"ckpt_path={best[0]}",
                "sampler=pc",
                "schedule.n_steps=5",
                "n_samples=50",
                "metrics=[sliced_w2]",
                "toy.n_reference=400",
            ],
            ev,
        )
    )
    m = json.loads((ev / "metrics.json").read_text())
    assert m["source"] == {"kind": "checkpoint", "ckpt_path": str(best[0]), "use_ema": True}
    assert m["sampler"]["name"] == "pc" and m["nfe"] == 10  # 5 predictor + 5 corrector steps
    assert math.isfinite(m["metrics"]["sliced_w2"])


def _fake_all_gather(other: dict):
    """all_gather of a 2-rank job seen from rank 0: (share, ...) -> (2, share, ...), rank 1
    holding the tensor of ``other`` with the same shape."""

    def all_gather(t):
        return torch.stack([t, other[tuple(t.shape)].to(t)])

    return all_gather


def test_statistics_use_the_features_of_both_ranks():
    suite = build_metric_suite(GMM, ["sliced_w2", "mode_weight_error"], OPTIONS)
    mix = ncsn_toy_mixture()
    mine = mix.sample(30, generator=torch.Generator().manual_seed(0))
    theirs = torch.full((30, 2), -5.0)  # rank 1 drew only the 0.2 mode
    feats = suite.features(mine)
    gathered = gather_features(_fake_all_gather({(30, 2): theirs}), feats, 2, 50)
    assert torch.equal(gathered["points"], torch.cat([mine, theirs])[:50])
    values = {v.name: v for v in suite.from_features(gathered)}
    assert values["sliced_w2"].n_samples == 50
    ref = sliced_wasserstein(
        torch.cat([mine, theirs])[:50],
        suite.reference,
        n_projections=64,
        generator=suite._sw_generator(),
    )
    assert abs(values["sliced_w2"].value - float(ref)) < 1e-6
    # Rank 1's 20 kept points all sit in the 0.2 mode: its share shows in the mode weights.
    w = values["mode_weight_error"].extra["mode_weights"]
    n0 = int((mine[:, 0] < 0).sum())
    assert abs(w[0] - (n0 + 20) / 50) < 1e-9


def test_callback_gathers_before_computing():
    """The callback on rank 0 of a fake 2-rank job: each rank draws n/2 samples and the logged
    value is that of the 2n/2 gathered ones."""
    cb = SampleMetrics(
        every_n_steps=1, n_samples=40, metrics=["mode_weight_error"], options=OPTIONS
    )
    cb.suite = build_metric_suite(GMM, ["mode_weight_error"], OPTIONS)
    theirs = torch.full((20, 2), 5.0)
    logged, draws = {}, []

    class Module:
        device = torch.device("cpu")
        training = False

        def eval(self):
            pass

        def train(self, mode=True):
            pass

        def sample(self, n, generator=None):
            draws.append(n)
            return SimpleNamespace(x=torch.full((n, 2), -5.0), nfe=3)

        def to_unit_range(self, x):
            return x

        def all_gather(self, t):
            other = {(20, 2): theirs, (1,): torch.zeros(1)}
            return torch.stack([t, other[tuple(t.shape)].to(t)])

        def log(self, key, value, **kw):
            logged[key] = value

    trainer = SimpleNamespace(
        world_size=2, global_rank=0, global_step=1, is_global_zero=True, loggers=[]
    )
    cb.evaluate(trainer, Module())
    assert draws == [20]
    # 20 points in the 0.2 mode (rank 0) and 20 in the 0.8 mode (rank 1): weights 0.5 / 0.5.
    assert abs(logged["val/mode_weight_error"] - 0.3) < 1e-9
