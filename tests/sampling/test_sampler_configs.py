"""``sampler=``, ``schedule=`` and ``init=`` are the sampling functions, grids and starts
themselves: every keyword is reachable from the command line, old keys name their new place, and
the draw walks the grid it was given."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, get_method

from run_helpers import sampler_of
from scorelab import toy
from scorelab.draw import MOVED, schedule_keywords, settable_keywords
from scorelab.lit.build import ConfigError, build_sampler
from scorelab.nets.precond import OracleScoreModel
from scorelab.runs import CONF_DIR, moved_sampler_keys
from scorelab.sde import VESDE, VPSDE

SAMPLERS = sorted(p.stem for p in (Path(CONF_DIR) / "sampler").glob("*.yaml"))
SCHEDULES = sorted(p.stem for p in (Path(CONF_DIR) / "schedule").glob("*.yaml"))
INITS = sorted(p.stem for p in (Path(CONF_DIR) / "init").glob("*.yaml"))
MIX = toy.GaussianMixture([0.3, 0.7], [[2.0, 10.0], [10.0, 4.0]], [[1.0, 0.7], [1.2, 1.0]])


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("sample", overrides=list(overrides))


def test_every_group_has_its_options():
    assert {"heun", "dpmpp", "ode", "pc", "em", "reverse_diffusion", "ancestral", "ald"} <= set(
        SAMPLERS
    )
    assert set(SCHEDULES) == {"karras", "geometric", "sde", "level"}
    assert set(INITS) == {"auto", "moments", "prior", "uniform"}


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_keyword_of_the_sampling_function_is_a_config_key(name):
    """The config targets the function with _partial_, and names every keyword the function
    takes (less what the draw and the schedule supply): ``sampler.<keyword>=`` works without +."""
    cfg = _compose(f"sampler={name}")
    node = cfg.sampler
    assert node._partial_ is True
    fn = get_method(node._target_)
    keys = set(node) - {"_target_", "_partial_"}
    assert keys == set(settable_keywords(fn)), (name, keys, settable_keywords(fn))
    sampler = build_sampler(cfg)
    assert sampler.function is fn and set(sampler.fn.keywords) == keys
    # each key set on the command line reaches the partial
    for key in keys - {"predictor", "corrector"}:
        value = node[key]
        new = {bool: not value, float: 2.5, int: 3, str: value}.get(type(value), 0.5)
        if key == "form":
            new = "taylor"
        if key == "method":
            new = "euler"
        cfg = _compose(f"sampler={name}", f"sampler.{key}={new}")
        assert build_sampler(cfg).fn.keywords[key] == new, key
    # and a key the function does not take is refused, naming the keywords it does take
    sampler = build_sampler(_compose(f"sampler={name}", "+sampler.bogus=1"))
    with pytest.raises(ValueError, match=r"sampler.bogus is not a keyword of \w+ \(its keywords"):
        sampler.check(OracleScoreModel(MIX, VESDE(0.01, 20.0, 50)), (2,))


@pytest.mark.parametrize("group, options", [("schedule", SCHEDULES), ("init", INITS)])
def test_every_setting_of_the_schedules_and_starts_is_a_config_key(group, options):
    for option in options:
        node = yaml.safe_load((Path(CONF_DIR) / group / f"{option}.yaml").read_text())
        params = inspect.signature(get_class(node["_target_"])).parameters
        keys = set(node) - {"_target_"}
        assert keys <= set(params), (option, keys - set(params))
        if group == "schedule":  # every setting of a schedule is in its file
            assert keys == set(params), (option, set(params) - keys)


@pytest.mark.parametrize(
    "name, old, new",
    [
        ("heun", "sampler.num_steps=10", "schedule.num_steps"),
        ("heun", "sampler.rho=5", "schedule.rho"),
        ("ald", "sampler.num_scales=10", "schedule.num_scales"),
        ("ode", "sampler.n_steps=10", "schedule.n_steps"),
        ("ode", "sampler.init=prior", "init=NAME"),
        ("ald", "sampler.init_low=-1", "init.low"),
    ],
)
def test_an_old_sampler_key_names_its_new_place(name, old, new):
    (arg,) = moved_sampler_keys([old])
    assert arg == f"++{old}"
    sampler = sampler_of(name, arg)
    model = OracleScoreModel(MIX, VESDE(0.01, 20.0, 50))
    with pytest.raises(ValueError, match=f"(moved to|use) {new}") as err:
        sampler.check(model, (2,))
    assert "\n" not in str(err.value)


def test_the_schedule_supplies_its_own_keywords():
    sampler = sampler_of("pc", "++sampler.eps=0.1")
    with pytest.raises(ValueError, match=r"set by the schedule; use schedule.eps=VALUE"):
        sampler.check(OracleScoreModel(MIX, VESDE(0.01, 20.0, 50)), (2,))
    assert schedule_keywords(sampler.function) == {"sde", "n_steps", "eps"}


@pytest.mark.parametrize(
    "name, schedule, fix",
    [
        ("heun", "sde", "schedule=karras or schedule=geometric"),
        ("pc", "karras", "schedule=sde"),
        ("langevin", "karras", "schedule=level"),
    ],
)
def test_a_grid_the_function_cannot_walk_is_refused(name, schedule, fix):
    sampler = sampler_of(name, f"schedule={schedule}")
    with pytest.raises(ValueError, match=fix):
        sampler.check(OracleScoreModel(MIX, VESDE(0.01, 20.0, 50)), (2,))


@pytest.mark.parametrize(
    "name, overrides, steps",
    [
        ("pc", ["schedule.n_steps=7"], 7),
        ("ald", ["schedule.num_scales=4", "sampler.n_steps_each=3"], 12),
        ("heun", ["schedule.num_steps=5"], 5),
        ("dpmpp", ["schedule.num_steps=6"], 6),
        ("langevin", ["sampler.n_steps=9"], 9),
    ],
)
def test_the_check_counts_the_steps_the_draw_takes(name, overrides, steps):
    """The progress bar's total comes from the check's dry run; the real draw calls the
    callback as often (counted here through the same function)."""
    model = OracleScoreModel(MIX, VESDE(0.01, 20.0, 50))
    sampler = sampler_of(name, *overrides)
    sampler.check(model, (2,))
    assert sampler.steps == steps
    seen = []
    fn = sampler.fn

    def counting(score, x, *args, callback=None, **kw):
        def cb(info):
            seen.append(info)

        return fn.func(score, x, *args, callback=cb, **kw)

    sampler(model, (3, 2), sample=counting, generator=torch.Generator().manual_seed(0))
    assert len(seen) == steps


def test_the_draw_starts_where_init_says_on_the_grids_first_point():
    """VP with schedule=sde: the prior is N(0, 1); init=moments is N(α(T) mean, α(T)² var +
    std(T)²) from the mixture's exact moments; uniform spans [low, high]."""
    model = OracleScoreModel(MIX, VPSDE())
    firsts = {}
    for init, extra in (("prior", []), ("moments", []), ("uniform", ["init.low=3", "init.high=4"])):
        sampler = sampler_of("em", f"init={init}", "schedule.n_steps=1", *extra)
        sampler.check(model, (2,))

        def first(score, x, *args, init=init, fn=sampler.fn.func, **kw):
            firsts[init] = x.clone()
            return fn(score, x, *args, **kw)

        sampler(model, (40_000, 2), sample=first, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(firsts["prior"].std(0), torch.ones(2), atol=0.02, rtol=0)
    alpha, std = model.noise.marginal_coeffs(torch.tensor([1.0], dtype=torch.float64))
    mean = alpha * torch.tensor([0.3 * 2 + 0.7 * 10, 0.3 * 10 + 0.7 * 4], dtype=torch.float64)
    torch.testing.assert_close(firsts["moments"].double().mean(0), mean, atol=0.02, rtol=0)
    u = firsts["uniform"]
    assert bool(((u >= 3) & (u <= 4)).all()) and abs(float(u.mean()) - 3.5) < 0.01


def test_an_old_checkpoint_sampler_config_is_refused_with_the_fix():
    cfg = _compose("sampler=heun")
    cfg.sampler = {"_target_": "scorelab.generate.EDMHeunDriver", "num_steps": 18}
    with pytest.raises(ConfigError, match="pick one on the command line: sampler=heun"):
        build_sampler(cfg)


def test_every_moved_key_points_somewhere_real():
    for key, place in MOVED.items():
        group = place.split(".")[0].split("=")[0]
        assert group in ("schedule", "init"), (key, place)
