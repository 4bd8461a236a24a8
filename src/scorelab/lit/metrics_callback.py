"""Sample-quality metrics during training, logged as ``val/<metric>`` and usable as a
checkpoint monitor (``callbacks=metrics`` adds this callback and a ModelCheckpoint on it)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from scorelab.lit.callbacks import EveryNSteps, draw_share, gather
from scorelab.metrics.suite import (
    MetricSuite,
    MetricValue,
    build_metric_suite,
    check_metric_names,
)


def gather_features(
    all_gather: Callable[[Tensor], Tensor],
    feats: dict[str, Tensor],
    world_size: int,
    n: int,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Features of every rank's share (:func:`~scorelab.lit.callbacks.gather`) cut to ``n``
    samples; ``*_seconds`` timings become the slowest rank's time."""
    out = {}
    for key, v in feats.items():
        g = gather(all_gather, v.to(device), world_size).detach().cpu()
        out[key] = g.max().reshape(1) if key.endswith("_seconds") else g[:n]
    return out


class SampleMetrics(EveryNSteps):
    """Every ``every_n_steps`` optimizer steps, draw ``n_samples`` with the EMA weights and
    log the chosen metrics as ``val/<name>`` (``val/sliced_w2``, ``val/fid``, ...) to every
    logger and to ``trainer.callback_metrics``, where a ModelCheckpoint can monitor them.

    Under DDP each rank draws its share with its own seed and turns it into features (points,
    classifier or Inception features); the features are gathered (``pl_module.all_gather``) and
    every rank computes the same statistics from all of them, so a monitor sees one value.

    Args:
        n_samples: samples per evaluation (over all ranks).
        metrics: metric names (:data:`scorelab.metrics.suite.METRICS`); ``None``: the data's
            defaults.
        options: per-metric settings laid over ``conf/metric_options/default.yaml`` (groups
            ``toy``, ``mnist``, ``fid``, ``is``, ``kid``).
        seed: base seed of the sampling noise (the same at every evaluation, so values of
            different steps differ by the model only).
        data: the run's data config (which metrics apply, the reference statistics); the
            training entry point passes it (:func:`scorelab.train.train`).
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        n_samples: int = 1000,
        metrics: list[str] | None = None,
        options: dict | None = None,
        seed: int = 4321,
        data: dict | None = None,
    ) -> None:
        super().__init__(every_n_steps, n_samples, seed, min_samples=2)
        self.data = data
        self.metrics = None if metrics is None else [str(m) for m in metrics]
        if self.metrics is not None:
            if "bpd" in self.metrics:
                raise ValueError(
                    "SampleMetrics computes sample metrics; bits/dim is run by "
                    "python -m scorelab.evaluate ckpt_path=... metrics=[bpd]"
                )
            check_metric_names(self.metrics)  # now, not after the first interval
        self.options = dict(options or {})
        self.suite: MetricSuite | None = None
        self.last: list[MetricValue] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.suite is not None:
            return
        data = self.data
        if not data:
            raise ValueError(
                "SampleMetrics needs the run's data config: pass data=... (python -m "
                "scorelab.train passes it)"
            )
        if pl_module.sampler is None:
            raise ValueError("SampleMetrics needs a sampler: set sampler=NAME in the run config")
        device = trainer.strategy.root_device
        self.suite = build_metric_suite(data, self.metrics, self.options, device)
        self.suite.check(self.n_samples)  # missing classifier / weights: fail before training
        # Rank 0 computes (and caches) reference statistics first; the others then read them.
        if trainer.is_global_zero:
            self.suite.prepare()
        if trainer.world_size > 1:
            trainer.strategy.barrier("sample_metrics_reference")
        self.suite.prepare()

    def evaluate(self, trainer, pl_module) -> list[MetricValue]:
        """Sample, gather features, compute and log; returns the values."""
        assert self.suite is not None, "setup() has not run"
        t0 = time.time()
        world = trainer.world_size
        res = draw_share(trainer, pl_module, self.n_samples, self.seed)
        x = pl_module.to_unit_range(res.x.float())
        # A diverged sampler on any rank makes every metric +inf on all ranks (worst for a
        # monitor in mode=min), instead of an error that would end the training run.
        bad = pl_module.all_gather((~torch.isfinite(x)).any().float().reshape(1))
        if float(bad.max()) > 0:
            values = [MetricValue(n, float("inf"), self.n_samples) for n in self.suite.names]
        else:
            feats = self.suite.features(x.cpu())
            gathered = gather_features(
                pl_module.all_gather, feats, world, self.n_samples, pl_module.device
            )
            values = self.suite.from_features(gathered)
        self._log(trainer, pl_module, values, int(res.nfe), time.time() - t0)
        self.last = values
        return values

    run = evaluate

    def _log(self, trainer, pl_module, values: list[MetricValue], nfe: int, wall: float) -> None:
        step = trainer.global_step
        numbers = {f"val/{v.name}": float(v.value) for v in values}
        for key, value in numbers.items():
            # callback_metrics (for ModelCheckpoint) on every rank; loggers below, once.
            pl_module.log(key, value, on_step=True, on_epoch=False, logger=False)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({**numbers, "val/metrics_nfe": float(nfe)}, step=step)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in numbers.items())
            rank_zero_info(f"step {step}: {shown} (n={self.n_samples}, NFE {nfe}, {wall:.1f}s)")
