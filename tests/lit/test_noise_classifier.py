"""A noise-conditional classifier p_t(y | x_t) trained by ``python -m scorelab.train`` and used
for classifier guidance (``task=class task.classifier=PATH``).

Exact answers on NCSN's mixture 0.2 N((-5,-5), I) + 0.8 N((5,5), I) with the components as
labels: the best possible classifier at time t is the component posterior of the perturbed
mixture (:func:`scorelab.toy.oracle_classifier`), so the trained one is scored against it on
the same perturbed points; guided samples of label 0 lie in component 0 (x₀ < 0 with
probability 1 - 3e-7), unguided ones only with the weight 0.2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import run_cli

from run_helpers import compose_cfg
from scorelab.io import atomic_torch_save
from scorelab.lit.build import build_module
from scorelab.lit.classifier import ClassifierModule, build_classifier_module
from scorelab.nets.noise_classifier import load_classifier
from scorelab.sample import sample
from scorelab.sde import VESDE
from scorelab.toy import GaussianMixture, oracle_classifier

SIGMA_MAX = 20.0
MIXTURE = GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], 1.0)
TRAIN = [
    "model=classifier_mlp",
    "data=gmm",
    "data.labels=true",
    "sde=ve",
    f"sde.sigma_max={SIGMA_MAX}",
    "data.n_train=4096",
    "data.n_val=1024",
    "data.batch_size=256",
    "optimizer.lr=3e-3",
    "module.ema_decay=0.9",
    "trainer.accelerator=cpu",
    "trainer.max_steps=400",
    "trainer.val_check_interval=200",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
    "callbacks.lr_monitor=null",
    "callbacks.progress=null",
    "callbacks.sample_grid=null",
    "n_samples=0",
]
SAMPLE = ["model=oracle", "data=gmm", "sde=ve", f"sde.sigma_max={SIGMA_MAX}", "sde.N=200"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The run directory of a classifier trained for 400 steps on the mixture (~10 s)."""
    from scorelab.train import train

    out = tmp_path_factory.mktemp("clf")
    result = train(compose_cfg("train", TRAIN, out))
    assert result["status"] == "ok" and result["global_step"] == 400
    return out


def _perturbed(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n points of the mixture with their components, perturbed at t ~ U(1e-5, 1) of the VE
    process: (x_t, t, label)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(MIXTURE.weights, n, replacement=True, generator=g)
    x0 = MIXTURE.means[k] + MIXTURE.stds[k] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 1e-5 + (1 - 1e-5) * torch.rand(n, generator=g, dtype=torch.float64)
    sde = VESDE(0.01, SIGMA_MAX)
    xt = x0 + sde.sigma(t)[:, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return xt.float(), t.float(), k


def _scores(fn, x, t, k) -> tuple[float, float]:
    """(cross-entropy, accuracy) of log-probabilities ``fn(x, t)`` against labels ``k``."""
    with torch.no_grad():
        logp = fn(x, t).double()
    ce = float(-logp.gather(1, k[:, None]).mean())
    return ce, float((logp.argmax(1) == k).double().mean())


def test_training_brings_the_classifier_to_the_exact_posterior(trained):
    classifier, config = load_classifier(trained / "checkpoints" / "last.ckpt")
    x, t, k = _perturbed(20_000, seed=1)
    ce, acc = _scores(classifier, x, t, k)
    best_ce, best_acc = _scores(oracle_classifier(MIXTURE, classifier.noise), x, t, k)
    fresh = build_classifier_module(compose_cfg("train", TRAIN, trained / "fresh")).classifier
    ce0, _ = _scores(fresh, x, t, k)
    # chance: always the heavier component (accuracy 0.8), or the weights as the posterior
    prior_ce = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert ce < ce0 - 0.1  # the loss went down from the untrained network's
    assert acc > 0.8 + 0.05 and ce < prior_ce - 0.1  # better than chance
    assert best_acc - acc < 0.02  # close to the Bayes classifier at every t
    assert ce - best_ce < 0.03
    # late times carry little information: the posterior tends to the weights, not to a guess
    late = t > 0.9
    ce_late, _ = _scores(classifier, x[late], t[late], k[late])
    best_late, _ = _scores(oracle_classifier(MIXTURE, classifier.noise), x[late], t[late], k[late])
    assert ce_late - best_late < 0.05
    assert config["sde"]["sigma_max"] == SIGMA_MAX


def test_guided_samples_land_in_the_requested_component(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    n = ["n_samples=1000", "batch_size=1000"]
    guided_cfg = (
        SAMPLE + n + ["sampler=pc", "task=class", "task.label=0", f"task.classifier={ckpt}"]
    )
    sample(compose_cfg("sample", guided_cfg, tmp_path / "guided"), overrides=[])
    sample(compose_cfg("sample", SAMPLE + n + ["sampler=pc"], tmp_path / "plain"), overrides=[])
    guided = np.load(tmp_path / "guided" / "samples.npz")["samples"]
    plain = np.load(tmp_path / "plain" / "samples.npz")["samples"]
    info = json.loads((tmp_path / "guided" / "sample_info.json").read_text())
    assert info["sampler"]["task"]["classifier"] == str(ckpt)
    in_zero = float((guided[:, 0] < 0).mean())
    assert abs(float((plain[:, 0] < 0).mean()) - 0.2) < 0.05  # the weight of component 0
    assert in_zero > 0.95  # exact classifier: 1 - 3e-7
    # and its shape: component 0 is N((-5, -5), I)
    y = guided[guided[:, 0] < 0]
    assert np.abs(y.mean(0) + 5).max() < 0.3 and np.abs(y.std(0) - 1).max() < 0.2


def test_checkpoint_round_trip(tmp_path):
    module = build_classifier_module(compose_cfg("train", TRAIN, tmp_path))
    assert isinstance(module, ClassifierModule)
    with torch.no_grad():  # weights no one would train to, in the EMA copy the loader reads
        for p in module.ema.module.parameters():
            p.copy_(torch.randn_like(p))
    path = tmp_path / "clf.ckpt"
    atomic_torch_save({"state_dict": module.state_dict(), "scorelab_config": module.config}, path)
    loaded, _ = load_classifier(path)
    x, t = torch.randn(16, 2) * 5, torch.rand(16)
    with torch.no_grad():
        assert torch.equal(loaded(x, t), module.ema.module(x, t))
        assert not torch.equal(loaded(x, t), module.classifier(x, t))  # the EMA weights
    assert torch.allclose(loaded(x, t).exp().sum(1), torch.ones(16))


def test_the_classifier_depends_on_the_noise_level(trained):
    classifier, _ = load_classifier(trained / "checkpoints" / "last.ckpt")
    x = torch.tensor([[-4.0, -4.0]]).repeat(2, 1)
    t = torch.tensor([1e-3, 1.0])
    with torch.no_grad():
        p = classifier(x, t).exp()
    # σ ≈ 0.01: x lies in component 0 (p₀ ≈ 1); σ = 20: both fit, p₀ = 1/(1 + 4 e^{0.2}) = 0.23
    exact = oracle_classifier(MIXTURE, classifier.noise)(x.double(), t.double()).exp()
    assert exact[0, 0] > 0.999 and abs(float(exact[1, 0]) - 0.234) < 0.005
    assert torch.allclose(p.double(), exact, atol=0.08)


# ------------------------------------------------------------------------------- refusals
def _refused(tmp_path: Path, extra: list[str], match: str) -> None:
    cfg = compose_cfg("sample", [*SAMPLE, "sampler=pc", "task=class", *extra], tmp_path)
    with pytest.raises(ValueError, match=match) as err:
        sample(cfg, overrides=[])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "samples.npz").exists()


def test_a_missing_classifier_file_is_refused(tmp_path):
    _refused(tmp_path, ["task.classifier=/nowhere/clf.ckpt"], r"task.classifier=/nowhere/clf")


def test_an_unreadable_classifier_file_is_refused(tmp_path):
    bad = tmp_path / "clf.ckpt"
    bad.write_text("not a checkpoint")
    _refused(tmp_path / "run", [f"task.classifier={bad}"], rf"task.classifier={bad}: ")


def test_a_score_checkpoint_is_no_classifier(tmp_path):
    path = tmp_path / "score.ckpt"
    cfg = compose_cfg("train", ["data=gmm", "sde=ve", "sde.sigma_max=20"], tmp_path)
    module = build_module(cfg)
    atomic_torch_save({"state_dict": module.state_dict(), "scorelab_config": module.config}, path)
    _refused(tmp_path / "run", [f"task.classifier={path}"], "is not a classifier checkpoint")


def test_a_classifier_of_another_sde_is_refused(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    _refused(
        tmp_path,
        [f"task.classifier={ckpt}", "sde.sigma_max=30"],
        r"trained on the SDE VESDE\(sigma_min=0.01, sigma_max=20\), but the score model's is "
        r"VESDE\(sigma_min=0.01, sigma_max=30\)",
    )
    cfg = compose_cfg(
        "sample",
        ["model=oracle", "data=gmm", "sde=vp", "sampler=pc", "task=class"]
        + [f"task.classifier={ckpt}"],
        tmp_path / "vp",
    )
    with pytest.raises(ValueError, match=r"score model's is VPSDE\(beta_0=0.1, beta_1=20\)"):
        sample(cfg, overrides=[])


def test_a_classifier_of_another_data_shape_is_refused(trained):
    from run_helpers import sampler_of
    from scorelab.nets.precond import OracleScoreModel
    from scorelab.tasks import build_task

    mixture = GaussianMixture([0.5, 0.5], [[-5.0, -5.0, 0.0], [5.0, 5.0, 0.0]], 1.0)
    model = OracleScoreModel(mixture, VESDE(0.01, SIGMA_MAX, 10))
    node = {"name": "class", "label": 0, "classifier": str(trained / "checkpoints/last.ckpt")}
    from omegaconf import OmegaConf

    with pytest.raises(ValueError, match=r"examples of shape \(2,\), but the score model draws"):
        build_task(OmegaConf.create(node), model, sampler_of("reverse_diffusion"), (3,), {}, 4)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["task.label=2"], r"task.label=2 must be a class index in \[0, 2\) for this 2-class"),
        (["task.label=-1"], r"task.label=-1 must be a class index in \[0, 2\)"),
        (["task.scale=-1.0"], r"task.scale=-1.0 must be a finite number >= 0"),
    ],
)
def test_bad_label_or_scale_is_refused(trained, tmp_path, extra, match):
    ckpt = trained / "checkpoints" / "last.ckpt"
    _refused(tmp_path, [f"task.classifier={ckpt}", *extra], match)


def test_a_classifier_checkpoint_is_no_score_model(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    cfg = compose_cfg("sample", [f"ckpt_path={ckpt}", "sampler=pc"], tmp_path)
    with pytest.raises(ValueError, match="model is a noise-conditional classifier, not a score"):
        sample(cfg, overrides=[f"ckpt_path={ckpt}", "sampler=pc"])


def test_training_a_classifier_without_labels_is_refused(tmp_path):
    overrides = [o for o in TRAIN if o != "data.labels=true"]
    with pytest.raises(ValueError, match="data.labels=false; set data.labels=true"):
        build_classifier_module(compose_cfg("train", overrides, tmp_path))


def test_refusal_through_the_command_line_is_one_line(tmp_path):
    proc = run_cli(
        "sample",
        [*SAMPLE, "sampler=pc", "task=class", "task.classifier=/nowhere/c.ckpt"]
        + [f"hydra.run.dir={tmp_path}"],
        check=False,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: task.classifier=/nowhere/c.ckpt is not a file")
