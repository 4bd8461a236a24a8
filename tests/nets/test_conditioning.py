"""Every model config's conditioning features tell noise levels apart over its training range.

Each ``model=`` config is composed through Hydra as the entry points do, with every noise
process it accepts (and EDM's parametrisation), and built by ``lit.build``. The probe: the
fixed features the network computes from what the parametrisation feeds it
(``net.cond_features(model.net_input(noise))``) on a dense grid of noise levels; for random
levels in between, the nearest grid point in feature space must give back the level within 1 %
of the training range (t over [1e-5, 1] for networks fed a time, ln σ over σ(1e-5) ... σ(1),
or over [σ_min, σ_max] on discrete levels, for networks fed a function of σ).
The old demo's features (999·t fed to an embedding that multiplies t by 1000 again) fail it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from run_helpers import compose_cfg
from scorelab.lit.build import ConfigError, build_noise, build_score_model
from scorelab.lit.classifier import build_classifier
from scorelab.nets.conditioning import STEP_SCALE
from scorelab.nets.precond import EDMPrecond, ScoreModel
from scorelab.nets.unet_small import UNetSmall
from scorelab.runs import CONF_DIR
from scorelab.sde import VPSDE

# Score networks (the oracle has none; the noise-conditional classifiers are probed through the
# experiments below)
MODELS = sorted(
    p.stem
    for p in (Path(CONF_DIR) / "model").glob("*.yaml")
    if "oracle: true" not in p.read_text() and not p.read_text().startswith("# A noise-cond")
)
SDES = ("ve", "vp", "subvp", "ncsn", "edm")
T_EPS = 1e-5  # the SDE losses' smallest training time
TOLERANCE = 0.01  # of the training range
# The embeddings do not depend on depth or width beyond the number of features (nf, ch, ngf
# kept where they set it): smaller bodies keep the 100M-parameter configs cheap to build.
SMALL = {
    "ncsn": ["model.net.ngf=16"],
    "ncsnv2": ["model.net.ngf=16"],
    "ncsnpp": ["model.net.num_res_blocks=1", "model.net.ch_mult=[1,1]"],
    "ddpmpp": ["model.net.num_res_blocks=1", "model.net.ch_mult=[1,1]"],
    "ddpm": ["model.net.num_res_blocks=1", "model.net.ch_mult=[1,1]"],
}


def _small(name: str) -> list[str]:
    return SMALL.get(name.removesuffix("_deep"), [])


def _data(name: str) -> list[str]:
    if name == "mlp":
        return ["data=gmm", "data.default_sigma_max=20"]
    return ["data=cifar10"]


def _compose(model: str, sde: str, extra: list[str], tmp_path: Path):
    overrides = [f"model={model}", f"sde={sde}", *_data(model), *_small(model), *extra]
    if sde == "edm":
        overrides += ["model/parametrization=edm", "loss=edm"]
    return compose_cfg("train", overrides, tmp_path)


def nn_recovery_error(features, u_query: torch.Tensor, n_grid: int = 4001) -> torch.Tensor:
    """|û - u| (Q,) where û is the grid level whose features are nearest to those at u.

    ``features(u)`` maps levels u in [0, 1] (B,) to features (B, F).
    """
    grid = torch.linspace(0.0, 1.0, n_grid, dtype=torch.float64)
    f_grid = features(grid).double()
    f_query = features(u_query).double()
    nearest = torch.cdist(f_query, f_grid).argmin(dim=1)
    return (grid[nearest] - u_query).abs()


def _queries(n: int = 1000) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, generator=g, dtype=torch.float64)


def _features_on_unit_range(model):
    """features(u) for u in [0, 1] spanning the model's training range of noise levels.

    u is uniform in what the network is fed a function of: t for the time kinds, ln σ for the
    σ kinds (on VP, ln σ changes by 1.6 between t = 1e-5 and 2.6e-4, so a grid uniform in t
    would be too coarse there to resolve features of ln σ).
    """
    noise = model.noise
    # σ_min, σ_max of the levels, or σ(T_EPS), σ(T) of an SDE
    lo, hi = (math.log(s) for s in noise.sigma_range())

    def to_noise(u):
        if model.net_cond in ("time", "step"):  # an SDE's time
            return (T_EPS + (noise.T - T_EPS) * u).float()
        sigma = torch.exp(lo + (hi - lo) * u)
        return noise.t_from_sigma(sigma).float()  # σ itself on discrete levels

    def features(u):
        with torch.no_grad():
            return model.net.cond_features(model.net_input(to_noise(u)))

    return features


# Combinations refused at construction, before training: a network fed 999·t needs an SDE, and
# NCSN's level index exists only on discrete levels.
REFUSED = {
    *((net, "ncsn") for net in ("ddpm", "ddpmpp", "ddpmpp_deep")),
    *(("ncsn", sde) for sde in ("ve", "vp", "subvp", "edm")),
}


def _build(model_name: str, sde: str, extra: list[str], tmp_path: Path):
    torch.manual_seed(0)  # the Fourier frequencies
    cfg = _compose(model_name, sde, extra, tmp_path)
    return build_score_model(cfg, build_noise(cfg))


@pytest.mark.parametrize("sde", SDES)
@pytest.mark.parametrize("model_name", MODELS)
def test_conditioning_features_tell_noise_levels_apart(model_name, sde, tmp_path):
    if (model_name, sde) in REFUSED:
        with pytest.raises(ConfigError, match="needs an SDE|sde=ncsn"):
            _build(model_name, sde, [], tmp_path)
        return
    extra = (
        ["model.parametrization.net_cond=none"] if (model_name, sde) == ("ncsnv2", "edm") else []
    )
    model = _build(model_name, sde, extra, tmp_path)
    assert isinstance(model, ScoreModel | EDMPrecond)
    if model.net_cond == "none":
        # An unconditional network: the σ dependence is the parametrisation's (1/std, or
        # EDM's c_skip, c_out and c_in), never the network's.
        assert model.net.cond_features(None) is None
        assert isinstance(model, EDMPrecond) or model.output == "scaled"
        return
    if model.net_cond == "index":
        levels = model.noise.sigmas.float()
        with torch.no_grad():
            f = model.net.cond_features(model.net_input(levels))
        nearest = torch.cdist(f, f).argmin(dim=1)
        assert torch.equal(nearest, torch.arange(levels.numel()))
        return
    err = nn_recovery_error(_features_on_unit_range(model), _queries())
    assert err.max() <= TOLERANCE, (
        f"{model_name} + {sde} ({model.net_cond}): max recovery error {err.max():.3g}, "
        f"median {err.median():.3g} of the training range"
    )


EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
SMALL_BY_CLASS = {
    "NCSNpp": SMALL["ncsnpp"],
    "DDPMpp": SMALL["ddpmpp"],
    "DDPM": SMALL["ddpm"],
    "NCSN": SMALL["ncsn"],
    "NCSNv2": SMALL["ncsnv2"],
    "NCSNv2Deeper": SMALL["ncsnv2"],
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_tells_its_noise_levels_apart(name, tmp_path):
    """The experiments' own parametrisation blocks (mnist_demo's above all) pass the probe."""
    cfg = compose_cfg("train", [f"experiment={name}"], tmp_path)
    extra = list(SMALL_BY_CLASS.get(cfg.model.net._target_.rsplit(".", 1)[-1], []))
    if cfg.sde.get("sigma_max") == "auto":  # NCSNv2's rule reads the data; any value will do
        extra.append("sde.sigma_max=20")
    cfg = compose_cfg("train", [f"experiment={name}", *extra], tmp_path)
    torch.manual_seed(0)
    if cfg.model.get("classifier") is not None:  # a classifier, fed from t as the score nets
        model = build_classifier(cfg)
    else:
        model = build_score_model(cfg, build_noise(cfg))
    if model.net_cond == "index":
        f = model.net.cond_features(model.net_input(model.noise.sigmas.float()))
        assert torch.equal(torch.cdist(f, f).argmin(dim=1), torch.arange(f.shape[0]))
    elif model.net_cond != "none":
        err = nn_recovery_error(_features_on_unit_range(model), _queries())
        assert err.max() <= TOLERANCE, f"{name}: max recovery error {err.max():.3g}"


def test_the_probe_fails_on_the_old_double_scaling():
    """The old demo fed 999·t to UNetSmall's "time" embedding, which multiplies by 1000 again."""
    net = UNetSmall(channels=1, image_size=28, embedding="time")

    def old_features(u):
        t = T_EPS + (1 - T_EPS) * u
        return net.cond_features((STEP_SCALE * t).float())

    def new_features(u):
        return net.cond_features((T_EPS + (1 - T_EPS) * u).float())

    old = nn_recovery_error(old_features, _queries())
    new = nn_recovery_error(new_features, _queries())
    assert old.median() > 10 * TOLERANCE  # the issue measured a median error of 0.24
    assert new.max() <= TOLERANCE


def test_the_double_scaling_is_refused_at_construction(tmp_path):
    net = UNetSmall(channels=1, image_size=28, embedding="time")
    with pytest.raises(ValueError, match="net_cond='step'.*cond_input='time'.*scaled twice"):
        ScoreModel(net, VPSDE(), net_cond="step", output="eps")
    # The old demo's parametrisation block, as a checkpoint of it carries it.
    cfg = compose_cfg(
        "train", ["experiment=mnist_demo_vp", "+model.parametrization.time_scale=999"], tmp_path
    )
    with pytest.raises(ConfigError, match=r"time_scale=999 .*scaled twice; drop time_scale"):
        build_score_model(cfg, build_noise(cfg))


def test_the_vp_demo_feeds_t_to_an_embedding_of_t(tmp_path):
    cfg = compose_cfg("train", ["experiment=mnist_demo_vp"], tmp_path)
    model = build_score_model(cfg, build_noise(cfg))
    assert (model.net_cond, model.net.cond_input) == ("time", "time")
    t = torch.tensor([0.25, 0.5])
    torch.testing.assert_close(model.net_input(t), t)


@pytest.mark.parametrize("kind", ["sigma", "c_noise", "step"])
def test_an_embedding_undoes_its_kind_so_equal_levels_give_equal_features(kind):
    """σ and EDM's c_noise give the same features; 999·t and t give the same features."""
    sigma = torch.tensor([0.002, 0.3, 80.0])
    t = torch.tensor([0.0, 0.4, 1.0])
    cond = {"sigma": sigma, "c_noise": 0.25 * torch.log(sigma), "step": 999.0 * t}[kind]
    ref_kind, ref = ("sigma", sigma) if kind != "step" else ("time", t)
    for features in ("sinusoidal", "fourier"):
        torch.manual_seed(0)
        a = UNetSmall(channels=1, image_size=28, embedding=kind, embed_features=features)
        torch.manual_seed(0)
        b = UNetSmall(channels=1, image_size=28, embedding=ref_kind, embed_features=features)
        torch.testing.assert_close(a.cond_features(cond), b.cond_features(ref))


@pytest.mark.parametrize(
    "model_name, sde, block, kind",
    [
        ("unet_small", "vp", {"net_cond": "sigma", "output": "scaled", "time_scale": 1.0}, "sigma"),
        ("ddpm", "vp", {"net_cond": "time", "output": "eps", "time_scale": 999.0}, "step"),
    ],
)
def test_checkpoints_of_the_old_convention_still_build(model_name, sde, block, kind, tmp_path):
    """A checkpoint's config from before the parametrisations were targets: no _target_, a
    time_scale. 999·t into DDPM's positional embedding is the kind "step" now."""
    from omegaconf import OmegaConf

    cfg = _compose(model_name, sde, [f"model.parametrization.net_cond={kind}"], tmp_path)
    plain = OmegaConf.to_container(cfg, resolve=True)  # as a checkpoint stores it
    plain["model"]["parametrization"] = dict(block)
    model = build_score_model(OmegaConf.create(plain), build_noise(cfg))
    assert isinstance(model, ScoreModel) and model.net_cond == kind
    t = torch.tensor([0.5])
    expected = 999.0 * t if kind == "step" else model.noise.sigma(t)
    torch.testing.assert_close(model.net_input(t), expected)
