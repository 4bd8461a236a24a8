"""The fast training path: ``perf=`` configs, ``module.compile`` modes, and checkpoints of
compiled modules."""

from __future__ import annotations

import json

import pytest
import torch
from cli import TOY_CLI, run_cli

from run_helpers import bare_trainer, compose_cfg
from scorelab.lit.build import build_module, load_module
from scorelab.lit.module import COMPILE_MODES, compile_mode


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, None),
        (None, None),
        ("off", None),
        ("false", None),
        (True, "default"),
        ("true", "default"),
        *((m, m) for m in COMPILE_MODES),
    ],
)
def test_compile_option_maps_to_a_torch_compile_mode(value, expected):
    assert compile_mode(value) == expected


def test_unknown_compile_mode_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"module.compile='fast' is not a torch.compile mode.*"):
        compile_mode("fast")
    with pytest.raises(ValueError, match="reduce-overhead"):
        compile_mode("fast")


@pytest.mark.parametrize(
    ("perf", "nonfinite", "compile"),
    [("fast", "off", True), ("safe_fast", "skip", True), ("cudagraphs", "off", "reduce-overhead")],
)
def test_perf_configs_switch_on_the_fast_path_over_the_experiment(
    tmp_path, perf, nonfinite, compile
):
    # mnist_demo sets its own module and trainer values; perf= must win over them.
    cfg = compose_cfg("train", ["experiment=mnist_demo", f"perf={perf}"], tmp_path)
    assert cfg.module.channels_last is True
    assert cfg.module.compile == compile
    assert cfg.module.nonfinite == nonfinite
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.optimizer.fused is True
    # Everything else of the experiment is untouched.
    assert cfg.module.ema_decay == 0.99 and cfg.data.batch_size == 128


def test_compiled_module_keeps_the_eager_state_dict(tmp_path):
    """torch.compile wraps the forward only: parameter names in checkpoints stay the eager ones
    (no ``_orig_mod.``), so compiled and eager runs load each other's checkpoints."""
    eager = build_module(compose_cfg("train", ["data=mnist", "model=unet_small"], tmp_path))
    compiled = build_module(
        compose_cfg(
            "train", ["data=mnist", "model=unet_small", "module.compile=reduce-overhead"], tmp_path
        )
    )
    assert compiled.compile_mode == "reduce-overhead" and eager.compile_mode is None
    assert isinstance(compiled._forward, torch._dynamo.eval_frame.OptimizedModule)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in k for k in compiled.state_dict())


@pytest.mark.slow  # torch.compile of the step takes about a minute on two cores
def test_toy_run_trains_with_the_fast_path_and_resumes_eager(tmp_path):
    logs = tmp_path / "logs"
    run_cli("train", [*TOY_CLI, "perf=fast", "trainer.max_steps=6", f"paths.log_dir={logs}"])
    (run_dir,) = list((logs / "train" / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["global_step"] == 6
    module = load_module(run_dir / "checkpoints" / "last.ckpt", overrides={"module.compile": False})
    assert module.compile_mode is None
    x = torch.randn(8, 2)
    assert torch.isfinite(module.ema_model()(x, torch.full((8,), 0.5))).all()


# Tensor methods that copy a value to the host (a device synchronisation on GPU).
HOST_READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "cpu")


def _host_reads_per_step(tmp_path, nonfinite: str, steps: int = 5) -> list[str]:
    """Train a toy module for ``steps`` steps and record every host read made inside
    ``training_step`` after the first two steps (which may read state once)."""

    from run_helpers import TOY_FAST
    from scorelab.lit.build import build_datamodule

    cfg = compose_cfg("train", [*TOY_FAST, f"module.nonfinite={nonfinite}"], tmp_path)
    module, datamodule = build_module(cfg), build_datamodule(cfg)
    reads: list[str] = []
    inner = module.training_step

    def watched_step(batch, batch_idx):
        if batch_idx < 2:
            return inner(batch, batch_idx)
        originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

        def spy(name):
            def read(self, *args, **kwargs):
                reads.append(f"step {batch_idx}: Tensor.{name}")
                return originals[name](self, *args, **kwargs)

            return read

        for name in HOST_READS:
            setattr(torch.Tensor, name, spy(name))
        try:
            return inner(batch, batch_idx)
        finally:
            for name, fn in originals.items():
                setattr(torch.Tensor, name, fn)

    module.training_step = watched_step
    trainer = bare_trainer(steps)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == steps
    return reads


def test_training_step_reads_nothing_back_to_the_host_with_the_check_off(tmp_path):
    """No device-to-host copy in the step (loss, clipping, Adam, LR schedule, EMA), so a GPU
    queue never drains inside it; the non-finite check is the one read, when it is on."""
    assert _host_reads_per_step(tmp_path / "off", "off") == []
    reads = _host_reads_per_step(tmp_path / "skip", "skip")
    assert reads == [f"step {i}: Tensor.__bool__" for i in (2, 3, 4)], reads
