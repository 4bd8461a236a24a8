"""An official checkpoint converted by ``python -m scorelab.convert`` samples through the normal
entry point; a checkpoint of the wrong architecture is refused with the offending keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lit"))
from cli import run_cli  # noqa: E402

from scorelab.convert import convert, main  # noqa: E402
from scorelab.lit.build import load_module  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fake_official_ncsnv2(path: Path) -> dict:
    """An NCSNv2 checkpoint.pth list with the official names and shapes (random values, small
    enough that the 29.7M-parameter network's activations stay finite: unit-variance weights
    overflow float32 within a few layers)."""
    fx = json.loads((FIXTURES / "official_ncsnv2_cifar10_keys.json").read_text())
    g = torch.Generator().manual_seed(0)
    entries = fx["buffers"] + fx["parameters"]
    model = {"module." + n: 0.02 * torch.randn(*s, generator=g) for n, s, *_ in entries}
    # The EMA weights: the raw ones negated (told apart from them, and still zero-mean: a shift
    # of every weight makes the activations grow by the fan-in per layer).
    ema = {n: -v for n, v in model.items() if not n.endswith("sigmas")}
    torch.save([model, {}, 3, 1234, ema], path)
    return model


def test_convert_ncsnv2_then_sample(tmp_path):
    official = tmp_path / "checkpoint.pth"
    model_sd = fake_official_ncsnv2(official)
    out = convert("ncsnv2", "ncsnv2_cifar10", official, tmp_path / "conv.ckpt")
    module = load_module(out)
    ours = module.model.net.state_dict()
    ema = module.ema.module.net.state_dict()
    # The official stem convolution is called begin_conv.
    assert torch.equal(ours["stem.weight"], model_sd["module.begin_conv.weight"])
    assert torch.equal(ema["stem.weight"], -model_sd["module.begin_conv.weight"])
    assert torch.load(out, weights_only=True)["global_step"] == 1234

    run = tmp_path / "sample"
    run_cli(
        "sample",
        [
            f"ckpt_path={out}",
            "n_samples=2",
            "sampler=heun",
            "schedule.num_steps=2",
            f"hydra.run.dir={run}",
        ],
        timeout=400,
    )
    # Random official weights give meaningless pixels; the shape, the README's [0, 1] range and
    # the NFE are what we check.
    samples = np.load(run / "samples.npz")["samples"]
    assert samples.shape == (2, 3, 32, 32) and samples.dtype == np.float32
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert json.loads((run / "sample_info.json").read_text())["nfe"] == 3
    assert (run / "samples_grid.png").is_file()


def test_sampling_a_checkpoint_with_its_own_sampler_keeps_its_settings(tmp_path):
    """``sampler=ald sampler.n_steps_each=1`` on an NCSNv2 run keeps step_lr and denoising."""
    from omegaconf import OmegaConf

    from run_helpers import compose_cfg
    from scorelab.lit.sampling_model import draw_for_checkpoint

    train_cfg = compose_cfg("train", ["experiment=ncsnv2_cifar10"], tmp_path)
    ckpt = {"scorelab_config": OmegaConf.to_container(train_cfg, resolve=True)}
    cli = ["sampler=ald", "sampler.n_steps_each=1"]
    cfg = compose_cfg("sample", [f"ckpt_path={tmp_path}/x.ckpt", *cli], tmp_path)
    merged = draw_for_checkpoint(cfg, ckpt, overrides=cli)["sampler"]
    assert merged.n_steps_each == 1
    assert merged.step_lr == 6.2e-6 and merged.final_denoise is True
    # Another sampler comes with its own group defaults.
    cfg = compose_cfg("sample", [f"ckpt_path={tmp_path}/x.ckpt", "sampler=heun"], tmp_path)
    picked = draw_for_checkpoint(cfg, ckpt, overrides=["sampler=heun"])
    assert picked["schedule"].num_steps == 18 and picked["init"].kind == "auto"
    assert picked["sampler"]._target_ == "scorelab.sampling.edm_heun"


def test_convert_refuses_wrong_architecture(tmp_path, capsys):
    official = tmp_path / "checkpoint.pth"
    fake_official_ncsnv2(official)
    # NCSN (v1) has conditional norms: the NCSNv2 keys cannot fit.
    rc = main(
        [
            "--format",
            "ncsn",
            "--experiment",
            "ncsn_cifar10",
            "--official",
            str(official),
            "--out",
            str(tmp_path / "x.ckpt"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "missing" in err or "unexpected" in err
    assert not (tmp_path / "x.ckpt").exists()
