"""Autoguidance: the guide snapshot a training run writes, and sampling guided by it, through the
real entry points (train, sample, evaluate) on the toy mixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli import TOY_CLI, run_cli

from run_helpers import REPO, compose_cfg
from scorelab.guidance import AutoGuidedScore, GuidanceError
from scorelab.lit.callbacks import GuideSnapshot
from scorelab.lit.sampling_model import apply_guidance

SNAPSHOT = [
    "+callbacks.guide_snapshot._target_=scorelab.lit.callbacks.GuideSnapshot",
    "+callbacks.guide_snapshot.fraction=0.5",  # of 40 steps: step 20
    "+callbacks.guide_snapshot.dirpath=${paths.output_dir}/checkpoints",
    "+callbacks.guide_snapshot.max_steps=${trainer.max_steps}",
]
DRAW = ["sampler=heun", "schedule.num_steps=6", "n_samples=64"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 40-step toy run with its guide snapshot at step 20; a stale guide.ckpt from an earlier
    run is in its checkpoint folder before it starts."""
    run_dir = tmp_path_factory.mktemp("ag") / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "guide.ckpt").write_bytes(b"an earlier run's snapshot")
    run_cli(
        "train",
        [*TOY_CLI, *SNAPSHOT, "trainer.max_steps=40", "trainer.val_check_interval=20",
         "n_samples=8", "callbacks.sample_grid=null", f"hydra.run.dir={run_dir}"],
    )  # fmt: skip
    return run_dir / "checkpoints"


def _sample(tmp_path, ckpt, *overrides):
    from scorelab.sample import sample

    info = sample(compose_cfg("sample", [f"ckpt_path={ckpt}", *DRAW, *overrides], tmp_path))
    return np.load(tmp_path / "samples.npz")["samples"], info


def test_snapshot_holds_the_weights_of_its_step(run):
    snap = torch.load(run / "guide.ckpt", weights_only=True)  # the stale file was replaced
    assert snap["global_step"] == 20
    assert torch.load(run / "last.ckpt", weights_only=True)["global_step"] == 40
    assert any(k.startswith("ema.module.") for k in snap["state_dict"])
    assert "optimizer_states" not in snap  # weights only: a guide, not a run to resume
    assert snap["scorelab_config"]["sde"] == torch.load(run / "last.ckpt")["scorelab_config"]["sde"]
    last = torch.load(run / "last.ckpt", weights_only=True)["state_dict"]
    ema = [k for k in last if k.startswith("ema.module.") and k.endswith(".weight")]
    assert ema and all(not torch.equal(snap["state_dict"][k], last[k]) for k in ema)


def test_guided_sampling_known_answers(run, tmp_path):
    """Guiding a model by itself changes nothing ((1 + w) s - w s = s); weight 0 is the model
    alone, exactly; the step-20 guide moves the samples, and the run records it."""
    last, guide = run / "last.ckpt", run / "guide.ckpt"
    plain, _ = _sample(tmp_path / "plain", last)
    itself, _ = _sample(tmp_path / "self", last, f"guidance.guide_ckpt={last}", "guidance.weight=3")
    np.testing.assert_allclose(itself, plain, rtol=0, atol=1e-4)
    zero, info0 = _sample(
        tmp_path / "w0", last, f"guidance.guide_ckpt={guide}", "guidance.weight=0"
    )
    np.testing.assert_array_equal(zero, plain)
    assert info0["guidance"]["network_calls_per_evaluation"] == 1
    moved, info = _sample(
        tmp_path / "w1", last, f"guidance.guide_ckpt={guide}", "guidance.weight=1"
    )
    assert np.abs(moved - plain).max() > 1e-2
    assert info["guidance"] == {
        "kind": "autoguidance",
        "guide_ckpt": str(guide),
        "weight": 1.0,
        "network_calls_per_evaluation": 2,
    }


def test_evaluate_records_guidance_and_writes_the_samples(run, tmp_path):
    out = tmp_path / "eval"
    proc = run_cli(
        "evaluate",
        [f"ckpt_path={run / 'last.ckpt'}", *DRAW, "metrics=[sliced_w2]",
         f"guidance.guide_ckpt={run / 'guide.ckpt'}", "guidance.weight=1", f"hydra.run.dir={out}"],
    )  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert m["guidance"]["kind"] == "autoguidance" and m["guidance"]["weight"] == 1.0
    assert np.load(out / "samples.npz")["samples"].shape == (64, 2)
    assert m["files"]["figure"].endswith("samples_scatter.png") and "grid:" in proc.stdout


def test_bad_guide_refused_before_sampling(run, tmp_path):
    cfg = compose_cfg(
        "sample",
        [f"ckpt_path={run / 'last.ckpt'}", *DRAW, f"guidance.guide_ckpt={tmp_path / 'no.ckpt'}"],
        tmp_path,
    )
    with pytest.raises(GuidanceError, match=r"guidance\.guide_ckpt=.*no\.ckpt does not exist"):
        apply_guidance(torch.nn.Identity(), cfg, {})
    cfg.guidance.guide_ckpt = str(run / "guide.ckpt")
    cfg.guidance.label = 0
    with pytest.raises(GuidanceError, match=r"guidance\.label .* guidance\.guide_ckpt .* both"):
        apply_guidance(torch.nn.Identity(), cfg, {})
    cfg.guidance.label, cfg.guidance.weight = None, -1.0
    with pytest.raises(GuidanceError, match=r"guidance\.weight=-1\.0 must be a finite number"):
        apply_guidance(torch.nn.Identity(), cfg, {})
    # a guide trained on another noise process: its noise argument means something else
    other = torch.load(run / "guide.ckpt", weights_only=True)
    other["scorelab_config"]["sde"]["sigma_max"] = 2 * other["scorelab_config"]["sde"]["sigma_max"]
    torch.save(other, tmp_path / "other.ckpt")
    proc = run_cli(
        "sample",
        [f"ckpt_path={run / 'last.ckpt'}", *DRAW, f"guidance.guide_ckpt={tmp_path / 'other.ckpt'}",
         "guidance.weight=1", f"hydra.run.dir={tmp_path / 'out'}"],
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert "another sde than the model (differing: sde.sigma_max)" in line, line
    assert not (tmp_path / "out" / "samples.npz").exists()


def test_snapshot_step_outside_the_run_refused(tmp_path):
    d = str(tmp_path)
    with pytest.raises(ValueError, match=r"guide_snapshot\.step=0 must be an integer >= 1"):
        GuideSnapshot(d, step=0)
    with pytest.raises(ValueError, match=r"step=40 must be below trainer\.max_steps=40"):
        GuideSnapshot(d, step=40, max_steps=40)
    with pytest.raises(ValueError, match=r"needs one of step .* and fraction"):
        GuideSnapshot(d, step=10, fraction=0.5)
    with pytest.raises(ValueError, match=r"guide_snapshot\.fraction=1\.5 must be in \(0, 1\)"):
        GuideSnapshot(d, fraction=1.5)
    assert GuideSnapshot(d, fraction=0.5, max_steps=1200).step == 600
    assert GuideSnapshot(d, fraction=0.25, max_steps=3).step == 1
    with pytest.raises(ValueError, match=r"fraction=0\.5 needs trainer\.max_steps \(got -1\)"):
        GuideSnapshot(d, fraction=0.5, max_steps=-1)
    assert GuideSnapshot(d, fraction=0.5, max_steps=1).step is None  # one step: nothing before
    proc = run_cli(
        "train",
        [*TOY_CLI, *SNAPSHOT, "callbacks.guide_snapshot.fraction=null",
         "+callbacks.guide_snapshot.step=50", "trainer.max_steps=40",
         f"hydra.run.dir={tmp_path / 'run'}"],
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "callbacks.guide_snapshot.step=50 must be below trainer.max_steps=40" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_autoguided_score_is_the_combination():
    """(1 + w) s - w s_guide for the score and for the samplers' sigma view; weight 0 never
    calls the guide."""
    from scorelab.nets.precond import OracleScoreModel
    from scorelab.sde import VESDE
    from scorelab.toy import GaussianMixture

    sde = VESDE(sigma_min=0.01, sigma_max=10.0)
    a = OracleScoreModel(GaussianMixture([0.5, 0.5], [[-2.0], [2.0]], 0.5), sde)
    b = OracleScoreModel(GaussianMixture([1.0], [[0.0]], 3.0), sde)
    x = torch.linspace(-4, 4, 9)[:, None]
    t = torch.full((9,), 0.3)
    ag = AutoGuidedScore(a, b, 2.5)
    torch.testing.assert_close(ag(x, t), 3.5 * a(x, t) - 2.5 * b(x, t))
    sigma = sde.sigma(t)
    want = 3.5 * a.sigma_score()(x, sigma) - 2.5 * b.sigma_score()(x, sigma)
    torch.testing.assert_close(ag.sigma_score()(x, sigma), want)

    class Refuse(torch.nn.Module):
        def forward(self, *args):
            raise AssertionError("weight 0 must not call the guide")

    torch.testing.assert_close(AutoGuidedScore(a, Refuse(), 0.0)(x, t), a(x, t))


def test_a_run_starting_before_the_step_removes_an_earlier_snapshot(tmp_path):
    """Killed before its step, a run must not leave an earlier run's guide.ckpt beside its own
    last.ckpt; resumed past the step, it keeps the snapshot it wrote."""
    from types import SimpleNamespace

    stale = tmp_path / "guide.ckpt"
    stale.write_bytes(b"an earlier run's snapshot")
    cb = GuideSnapshot(str(tmp_path), step=20)
    cb.on_train_start(SimpleNamespace(global_step=30, is_global_zero=True), None)
    assert stale.exists()  # resumed past step 20: its own snapshot
    cb.on_train_start(SimpleNamespace(global_step=0, is_global_zero=True), None)
    assert not stale.exists()


def test_make_demo_guides_with_the_snapshot_the_demo_writes(tmp_path):
    """The Makefile's demo evaluation reads the guide.ckpt that experiment=mnist_demo's callback
    writes into the run's checkpoint folder, halfway through its steps."""
    import re

    from hydra.utils import instantiate

    makefile = (REPO / "Makefile").read_text()
    run = re.search(r"^DEMO_RUN := (\S+)$", makefile, re.M).group(1)
    assert "guidance.guide_ckpt=$(DEMO_RUN)/checkpoints/guide.ckpt guidance.weight=4" in makefile
    cfg = compose_cfg("train", ["experiment=mnist_demo"], tmp_path / run)
    cb = instantiate(cfg.callbacks.guide_snapshot)
    assert cb.path == tmp_path / run / "checkpoints" / "guide.ckpt"
    assert cb.step == cfg.trainer.max_steps // 2 == 600
