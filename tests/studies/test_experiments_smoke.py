"""Every study in experiments/ runs end to end at its --smoke size and writes its outputs."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
MNIST = EXPERIMENTS.parent / "data" / "raw" / "MNIST" / "raw" / "train-images-idx3-ubyte"


def run_study(name: str, out: Path, *extra: str):
    main = runpy.run_path(str(EXPERIMENTS / name / "run.py"))["main"]
    return main(["--smoke", "--out", str(out), *extra])


def test_every_study_has_a_readme_with_its_command():
    studies = sorted(p for p in EXPERIMENTS.iterdir() if (p / "run.py").is_file())
    assert len(studies) >= 5
    for study in studies:
        readme = (study / "README.md").read_text()
        assert f"experiments/{study.name}/run.py" in readme, study.name


def test_01_langevin_vs_annealed(tmp_path: Path):
    s = run_study("01_langevin_vs_annealed", tmp_path)
    assert len(s["langevin"]["per_seed"]) == len(s["annealed"]["per_seed"]) == 2
    # NCSN Fig. 3 at smoke size (512 samples, binomial s.e. 0.02): annealed Langevin recovers
    # the 0.2 weight of the small mode, plain Langevin keeps the start's split near 1/2.
    for plain, annealed in zip(s["langevin"]["per_seed"], s["annealed"]["per_seed"]):
        assert abs(annealed - 0.2) < 0.1, s["annealed"]
        assert abs(plain - 0.2) > 0.2, s["langevin"]
        assert abs(annealed - 0.2) < abs(plain - 0.2) - 0.15
    assert {p.name for p in tmp_path.iterdir()} == {
        "mode_weights.json",
        "mode_weights.md",
        "samples.png",
    }


def test_02_score_accuracy(tmp_path: Path):
    s = run_study("02_score_accuracy_low_density", tmp_path)
    assert s["SSM"]["p_weighted_rmse"] > 0
    assert (tmp_path / "score_error.png").stat().st_size > 0


@pytest.mark.skipif(not MNIST.is_file(), reason="needs MNIST: make data")
def test_03_manifold_hypothesis(tmp_path: Path):
    s = run_study("03_manifold_hypothesis", tmp_path)
    assert all(len(c) == 3 for c in s["curves"].values())
    assert (tmp_path / "ssm_loss.png").is_file()


def test_04_estimators(tmp_path: Path):
    r = run_study("04_dsm_ssm_ism", tmp_path)
    res = r["results"]
    # DSM's estimate carries D/(2σ²): its spread grows as σ shrinks, far beyond ISM's
    assert res["DSM σ=0.01"]["loss_std_at_ref"] > res["DSM σ=0.1"]["loss_std_at_ref"]
    assert res["DSM σ=0.1"]["loss_std_at_ref"] > res["ISM (exact trace)"]["loss_std_at_ref"]
    assert (tmp_path / "estimators.md").is_file()


# Slow (about 12 s, a trained sweep): the fast suite covers its parts through
# tests/studies/test_sweeps.py (a real multirun read by scorelab.report) and test_report.py.
@pytest.mark.slow
def test_05_sigma_ablation(tmp_path: Path):
    s = run_study("05_sigma_schedule_ablation", tmp_path / "out", "--work", str(tmp_path / "w"))
    assert s["oracle_sigma_max_N"]["evaluated"] == 2
    assert s["trained_sigma_max"]["evaluated"] == 1
    table = (tmp_path / "out" / "oracle_sigma_max_N_sw.md").read_text()
    assert "| sde.sigma_max | sde.N=10 |" in table and "| auto |" in table
    run = next((tmp_path / "w" / "trained_sigma_max").glob("0_*/metrics.json"))
    metrics = json.loads(run.read_text())["metrics"]
    assert {"sw", "mode_err", "val/loss"} <= set(metrics)


def _budget_row(recipe: str, steps: int, fid: float, grid: str | None) -> dict:
    row = {
        "recipe": recipe,
        "steps": steps,
        "train_wall_s": 60.0 * steps / 1000,
        "mnist_fid": fid,
        "classifier_score": 8.0,
        "classes_covered": 10,
        "confident_share": 0.8,
        "nfe": 35,
    }
    return row | ({"grid": grid} if grid else {})


def test_07_collect_merges_runs_into_one_table(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, rows in [
        (a, [_budget_row("edm_cos_lr2e-3", 16000, 15.5, "grid_x.png")]),
        (
            b,
            [_budget_row("edm_cos_lr2e-3", 4000, 23.3, None), _budget_row("edm", 1000, 67.5, None)],
        ),
    ]:
        d.mkdir()
        (d / "results.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    assert (
        run_study(
            "07_mnist_budget", out, "--collect", str(a / "results.json"), str(b / "results.json")
        )
        == 0
    )
    rows = json.loads((out / "results.json").read_text())
    assert [(r["recipe"], r["steps"]) for r in rows] == [
        ("edm", 1000),
        ("edm_cos_lr2e-3", 4000),
        ("edm_cos_lr2e-3", 16000),
    ]
    md = (out / "results.md").read_text()
    assert "| edm_cos_lr2e-3 | 16000 | 960 | 15.5 |" in md
    assert "[png](../a/grid_x.png)" in md  # the grid stays linked where its run wrote it
    assert (out / "budget.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no such results.json"):
        run_study("07_mnist_budget", out, "--collect", str(tmp_path / "missing.json"))


# Slow (a real train + evaluate pair, about 30 s).
@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason="needs MNIST: make data")
def test_07_mnist_budget_smoke(tmp_path: Path):
    out = tmp_path / "out"
    assert (
        run_study(
            "07_mnist_budget", out, "--steps", "3", "--n-eval", "4", "--work", str(tmp_path / "w")
        )
        == 0
    )
    (row,) = json.loads((out / "results.json").read_text())
    assert row["steps"] == 3 and row["n_samples"] == 4
    assert 1 <= row["classes_covered"] <= 4
    assert "| edm_ema99_lr1e-3 | 3 |" in (out / "results.md").read_text()


# Slow (two short trainings and three evaluations, about a minute).
@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason="needs MNIST: make data")
def test_07_autoguidance_rows(tmp_path: Path):
    """run.py --autoguidance scores the demo's weights again with its guide snapshot, and
    autoguidance.py sweeps guide snapshots and weights of one run."""
    out = tmp_path / "out"
    args = ["--recipes", "demo", "--steps", "4", "--n-eval", "4", "--autoguidance", "1"]
    assert run_study("07_mnist_budget", out, *args, "--work", str(tmp_path / "w")) == 0
    plain, guided = json.loads((out / "results.json").read_text())
    assert (plain["recipe"], guided["recipe"]) == ("demo", "demo+ag1")
    assert plain["guidance"] is None and guided["guidance"]["weight"] == 1.0
    assert guided["guidance"]["guide_ckpt"].endswith("checkpoints/guide.ckpt")
    assert (out / guided["grid"]).stat().st_size > 0
    sweep = runpy.run_path(str(EXPERIMENTS / "07_mnist_budget" / "autoguidance.py"))["main"]
    assert sweep(["--smoke", "--out", str(tmp_path / "ag"), "--work", str(tmp_path / "agw")]) == 0
    rows = json.loads((tmp_path / "ag" / "results.json").read_text())
    assert [(r["guide_step"], r["weight"]) for r in rows] == [(None, 0.0), (2, 1.0)]
    assert rows[1]["guidance"]["guide_ckpt"].endswith("snaps/snap_00002.ckpt")
    assert (tmp_path / "ag" / "autoguidance.png").stat().st_size > 0


def test_07_every_recipe_builds_and_changes_the_demo():
    """Each recipe of the MNIST budget study composes through Hydra, builds its ScoreModule (so
    a mismatch such as the parametrisation's and the loss's sigma_data is refused here, not
    after a run has started), and only the demo's own rows train the demo's configuration."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from scorelab.lit.build import build_module
    from scorelab.runs import register_resolvers

    register_resolvers()
    recipes = runpy.run_path(str(EXPERIMENTS / "07_mnist_budget" / "run.py"))["RECIPES"]
    conf = str(EXPERIMENTS.parent / "conf")

    def composed(overrides):
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, "paths.output_dir=unused"])
        return cfg

    demo = OmegaConf.to_container(composed(["experiment=mnist_demo"]))
    same_as_demo = set()
    for name, overrides in recipes.items():
        cfg = composed(overrides)
        build_module(cfg)
        if OmegaConf.to_container(cfg) == demo:
            same_as_demo.add(name)
    # edm_pmean0.6 is the P_mean sweep's row that the demo then adopted
    assert same_as_demo == {"demo", "edm_pmean0.6"}
