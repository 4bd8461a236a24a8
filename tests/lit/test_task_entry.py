"""``python -m scorelab.sample task=inpaint|class``: the conditional samplers through the entry
point, and bad task input refused before sampling in one line.

On NCSN's mixture 0.2 N((-5,-5), I) + 0.8 N((5,5), I): class 0 with the exact classifier is
N((-5,-5), I); x₀ = 4 leaves x₁ | x₀ = 4 almost exactly N(5, 1) (the other component's weight
is 0.25 e^{-40}).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import run_cli

from run_helpers import compose_cfg, sampler_of
from scorelab.nets.precond import OracleScoreModel
from scorelab.sample import sample
from scorelab.sde import VESDE
from scorelab.tasks import build_task, image_mask
from scorelab.toy import GaussianMixture

FAST = ["model=oracle", "data=gmm", "sde.N=200", "n_samples=2000", "batch_size=2000"]


def _sample(tmp_path: Path, overrides: list[str]) -> tuple[np.ndarray, dict]:
    cfg = compose_cfg("sample", [*FAST, *overrides], tmp_path)
    sample(cfg, overrides=[])
    info = json.loads((tmp_path / "sample_info.json").read_text())
    return np.load(tmp_path / "samples.npz")["samples"], info


def test_the_documented_class_command_samples_component_1(tmp_path):
    out = tmp_path / "out"
    run_cli(
        "sample",
        [
            "model=oracle",
            "data=gmm",
            "sde=ve",
            "sampler=pc",
            "task=class",
            "task.label=1",
            "sde.N=200",
            "n_samples=500",
            f"hydra.run.dir={out}",
        ],
    )
    x = np.load(out / "samples.npz")["samples"]
    info = json.loads((out / "sample_info.json").read_text())
    assert info["sampler"]["task"] == {
        "name": "class",
        "label": 1,
        "scale": 1.0,
        "classifier": "exact component posterior",
    }
    assert (out / "task_scatter.png").stat().st_size > 0
    assert (x[:, 0] > 0).all()  # component 1 is N((5, 5), I): x₀ < 0 has probability 3e-7


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_class_zero_gives_the_small_component(tmp_path, sde):
    x, _ = _sample(tmp_path, [f"sde={sde}", "sampler=pc", "task=class", "task.label=0"])
    assert (x[:, 0] < 0).mean() >= 0.99  # exact: 1 - 3e-7
    se = 1 / np.sqrt(len(x))
    assert np.abs(x.mean(0) - (-5.0)).max() < 4 * se + 0.02
    assert np.abs(x.std(0) - 1.0).max() < 0.06


@pytest.mark.parametrize("sampler", ["pc", "em"])
def test_inpaint_points_fixes_the_known_coordinate(tmp_path, sampler):
    x, info = _sample(
        tmp_path,
        [
            "sde=vp",
            f"sampler={sampler}",
            "task=inpaint",
            "task.known_dims=[0]",
            "task.known_values=[4.0]",
        ],
    )
    assert info["sampler"]["task"]["known_dims"] == [0]
    assert (x[:, 0] == 4.0).all()
    assert (x[:, 1] > 0).mean() >= 0.98
    pos = x[x[:, 1] > 0, 1]
    # The replacement sampler itself is off here by about -0.1 in the mean and +0.07 in the std
    # with Euler-Maruyama (the same at 200 and 1000 steps), less with PC's corrector; the exact
    # checks are in tests/sampling/test_conditional.py. This one checks the wiring.
    assert abs(pos.mean() - 5.0) < 0.2 and abs(pos.std() - 1.0) < 0.12
    assert (tmp_path / "task_scatter.png").stat().st_size > 0


def test_inpaint_images_keeps_each_samples_own_known_pixels():
    """Images of shape (1, 4, 4) from a 16-D mixture's oracle: the known pixels of sample i are
    observation i's, across batches."""
    mix = GaussianMixture([0.5, 0.5], [[0.2] * 16, [0.8] * 16], 0.1)
    sde = VESDE(0.01, 5.0, 30)
    model = OracleScoreModel(mix, sde)
    driver = sampler_of("reverse_diffusion", "schedule.n_steps=30")
    node = {"name": "inpaint", "mask": "left_half"}
    task = build_task(_node(node), model, driver, (1, 4, 4), {}, 5, images=torch.rand(5, 1, 4, 4))
    from scorelab.lit.sampling_model import draw

    x, _, _ = draw(model, task, (1, 4, 4), 5, 2, 0)
    m = image_mask("left_half", (1, 4, 4))
    assert torch.equal(x[:, m], task.known[:, m].float())
    assert not torch.equal(x[:, ~m], task.known[:, ~m].float())


def test_colorize_images_keeps_each_samples_grey_level(tmp_path):
    """Colour images (3, 2, 2) from a 12-D mixture's oracle: every sample's channel mean is its
    observation's, the colours are sampled, and the grid of grey input / samples / original is
    written."""
    mix = GaussianMixture([0.5, 0.5], [[0.2] * 12, [0.8] * 12], 0.1)
    sde = VESDE(0.01, 5.0, 30)
    model = OracleScoreModel(mix, sde)
    driver = sampler_of("reverse_diffusion", "schedule.n_steps=30")
    images = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    task = build_task(_node({"name": "colorize"}), model, driver, (3, 2, 2), {}, 5, images=images)
    from scorelab.lit.sampling_model import draw

    x, _, _ = draw(model, task, (3, 2, 2), 5, 2, 0)
    torch.testing.assert_close(x.mean(1), images.mean(1), atol=1e-5, rtol=0)
    assert not torch.allclose(x, images, atol=1e-3)
    path = task.figure(x, tmp_path, lambda v: v)
    assert path.name == "task_grid.png" and path.stat().st_size > 0


# ----------------------------------------------------------------------------------------------
# Refusals: one line, value, allowed range and fix, before any sampling
# ----------------------------------------------------------------------------------------------


def _node(d: dict):
    from omegaconf import OmegaConf

    return OmegaConf.create(d)


def _oracle(dim: int = 2):
    mix = GaussianMixture([0.2, 0.8], [[-5.0] * dim, [5.0] * dim], 1.0)
    return OracleScoreModel(mix, VESDE(0.01, 20.0, 10))


PC = sampler_of("reverse_diffusion")
REFUSALS = [
    ({"name": "inpaint"}, (2,), r"needs task.known_dims and task.known_values"),
    (
        {"name": "inpaint", "known_dims": [2], "known_values": [1.0]},
        (2,),
        r"task.known_dims has 2, but coordinates are integers in \[0, 2\)",
    ),
    (
        {"name": "inpaint", "known_dims": [0, 1], "known_values": [1.0]},
        (2,),
        r"must have the same length .* got 2 and 1",
    ),
    (
        {"name": "inpaint", "known_dims": [0, 0], "known_values": [1.0, 2.0]},
        (3,),
        r"repeats a coordinate",
    ),
    (
        {"name": "inpaint", "known_dims": [0, 1], "known_values": [1.0, 2.0]},
        (2,),
        r"fixes all 2 coordinates",
    ),
    ({"name": "class", "label": 2}, (2,), r"task.label=2 must be a component index in \[0, 2\)"),
    ({"name": "class", "label": -1}, (2,), r"task.label=-1 must be .* \[0, 2\)"),
    ({"name": "class", "label": 0, "scale": -1.0}, (2,), r"task.scale=-1.0 must be .* >= 0"),
    (
        {"name": "inpaint", "mask": "random", "fraction": 1.5},
        (1, 4, 4),
        r"task.fraction=1.5 must be in \(0, 1\)",
    ),
    (
        {"name": "inpaint", "mask": "nowhere.png"},
        (1, 4, 4),
        r"task.mask='nowhere.png' is neither one of center, left_half, random nor an existing",
    ),
    ({"name": "colour"}, (2,), r"task=colour is not a task; use task=none, inpaint, colorize"),
    ({"name": "colorize"}, (2,), r"task=colorize needs colour images \(C >= 2, H, W\)"),
    ({"name": "colorize"}, (1, 4, 4), r"got examples of shape \(1, 4, 4\); single-channel"),
]


@pytest.mark.parametrize(("node", "shape", "match"), REFUSALS)
def test_bad_task_input_is_refused_in_one_line(node, shape, match):
    dim = int(np.prod(shape))
    with pytest.raises(ValueError, match=match) as err:
        build_task(_node(node), _oracle(dim), PC, shape, {}, 4)
    assert "\n" not in str(err.value)


def test_mask_file_of_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "mask.npy"
    np.save(path, np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"has shape \(3, 5\), but one image is \(1, 4, 4\)"):
        build_task(_node({"name": "inpaint", "mask": str(path)}), _oracle(16), PC, (1, 4, 4), {}, 4)
    np.save(path, np.eye(4))
    task = build_task(
        _node({"name": "inpaint", "mask": str(path)}),
        _oracle(16),
        PC,
        (1, 4, 4),
        {},
        4,
        images=torch.zeros(4, 1, 4, 4),
    )
    assert torch.equal(task.mask[0], torch.eye(4, dtype=torch.bool))


def test_class_on_a_model_without_classifier_is_refused():
    class Trained:  # a checkpoint's model: a score, no mixture, no classifier
        noise = VESDE(0.01, 20.0, 10)

    with pytest.raises(ValueError, match="on a trained score model needs task.classifier=PATH"):
        build_task(_node({"name": "class", "label": 0}), Trained(), PC, (2,), {}, 4)


def test_task_with_a_sampler_that_cannot_take_it_is_refused(tmp_path):
    cfg = compose_cfg("sample", [*FAST, "sampler=ode", "task=class"], tmp_path)
    with pytest.raises(ValueError, match=r"task=class runs on .*sampler=pc.*got sampler=ode"):
        sample(cfg, overrides=[])
    assert not (tmp_path / "samples.npz").exists()


def test_refusal_through_the_command_line_is_one_line(tmp_path):
    proc = run_cli(
        "sample",
        ["sampler=pc", "task=class", "task.label=5", f"hydra.run.dir={tmp_path}"],
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: task.label=5 must be")
