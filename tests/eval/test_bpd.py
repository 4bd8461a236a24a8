"""Bits/dim through the probability-flow ODE with exact scores, against exact densities."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from eval_helpers import mixture_logpdf
from omegaconf import OmegaConf
from torch import nn

from scorelab.evaluate import _bpd_options, bits_per_dim_eval
from scorelab.likelihood import dequantize
from scorelab.metrics.suite import DataInfo
from scorelab.sde import VESDE, VPSDE
from scorelab.toy import GaussianMixture, ncsn_toy_mixture, oracle_time_score

# evaluate's defaults (dopri5, tolerances 1e-5, test split), with the exact divergence
OPTS = _bpd_options(OmegaConf.create({"bpd": {"divergence": "exact"}}))


class _ToyData:
    """The part of ToyDataModule bits/dim reads: a test split and the known density."""

    def __init__(self, mix: GaussianMixture, n: int) -> None:
        self.distribution = mix
        self.x = mix.sample(n, generator=torch.Generator().manual_seed(3))

    def setup(self, stage=None) -> None:
        pass

    def test_dataloader(self):
        return [self.x[:20], self.x[20:]]


class _Oracle(nn.Module):
    """Exact time score of a mixture over flattened inputs of any shape."""

    def __init__(self, mix: GaussianMixture, sde) -> None:
        super().__init__()
        self.noise, self._s = sde, oracle_time_score(mix, sde)

    def time_score(self):
        return lambda x, t: self._s(x.flatten(1), t).reshape(x.shape)


@pytest.mark.parametrize("sde", [VESDE(0.01, 50.0), VPSDE()], ids=["ve", "vp"])
def test_nll_of_the_oracle_matches_the_exact_density(sde):
    """2-D mixture as data: ODE NLL (nats/dim) equals -log p/D, with log p written out in the
    test. Exact divergence: within 0.01 nats/dim (prior mismatch + solver); Hutchinson: within
    4 s.e. of its paired error + 0.01."""
    mix = ncsn_toy_mixture()
    dm, info = _ToyData(mix, 48), DataInfo("gmm", (2,), "none")
    truth = float(-mixture_logpdf(dm.x).mean() / 2)
    exact = bits_per_dim_eval(_Oracle(mix, sde), dm, info, OPTS, 48, seed=0, device="cpu")
    assert exact.extra["unit"] == "nats/dim" and exact.n_samples == 48
    assert abs(exact.value - truth) < 0.01
    assert exact.extra["exact_value"] == pytest.approx(truth, abs=1e-9)
    assert exact.extra["error_vs_exact"] == pytest.approx(exact.value - truth, abs=1e-9)
    hutch = bits_per_dim_eval(
        _Oracle(mix, sde), dm, info, {**OPTS, "divergence": "hutchinson_rademacher"}, 48, 0, "cpu"
    )
    se = hutch.extra["error_vs_exact_stderr"]
    assert se > 0 and abs(hutch.value - truth) < 4 * se + 0.01
    assert hutch.value != exact.value  # the estimator did draw probes


class _Images:
    """uint8 'images' (n, 1, 2, 2) as an image data module's test split."""

    def __init__(self, x_u8: torch.Tensor) -> None:
        self.x = x_u8

    def check_files(self) -> None:
        pass

    def source(self, split):
        return SimpleNamespace(n=len(self.x), images=lambda idx: self.x[idx])


def test_bits_per_dim_offset_and_scaling():
    """A Gaussian model of 1×2×2 images, once in [0, 1] and once mapped to [-1, 1]: bits/dim is
    the exact Gaussian code length of the dequantized pixels, -log2 p/D + 8 (zero_one) or + 7
    (minus_one_one), the same number in both scalings (within 0.01 bits/dim)."""
    n, D = 16, 4
    u8 = torch.randint(
        60, 200, (n, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    sde = VESDE(0.01, 50.0)
    values = {}
    for scaling, (mu, std) in {"zero_one": (0.5, 0.2), "minus_one_one": (0.0, 0.4)}.items():
        mix = GaussianMixture([1.0], [[mu] * D], std)
        info = DataInfo("images", (1, 2, 2), scaling)
        mv = bits_per_dim_eval(_Oracle(mix, sde), _Images(u8), info, OPTS, n, seed=7, device="cpu")
        # The same dequantization noise as the evaluation (same seed, first draw).
        x = dequantize(u8, torch.Generator().manual_seed(7), data_range=scaling)
        truth = -mix.log_prob(x.flatten(1).double()) / (D * math.log(2))
        offset = {"zero_one": 8, "minus_one_one": 7}[scaling]
        assert mv.extra["offset"] == offset and mv.extra["unit"] == "bits/dim"
        assert abs(mv.value - (float(truth.mean()) + offset)) < 0.01
        values[scaling] = mv.value
    assert abs(values["zero_one"] - values["minus_one_one"]) < 0.01


def test_repeats_average_dequantization_noise():
    """repeats=3 is the mean over three dequantizations of the same images: the evaluation draws
    them one after another from one generator seeded with ``seed``; the same three draws here,
    each scored with the exact Gaussian density, give the value per image and its mean. The
    Gaussian (std 0.002, half a level) is narrow enough that the draws change bits/dim by more
    than the 0.01 allowed for the solver."""
    n, D, seed, std = 8, 4, 0, 0.002
    g = torch.Generator().manual_seed(1)
    u8 = (127 + torch.randint(0, 2, (n, 1, 2, 2), generator=g)).to(torch.uint8)
    mix = GaussianMixture([1.0], [[0.5] * D], std)
    info = DataInfo("images", (1, 2, 2), "zero_one")

    def run(repeats: int):
        model = _Oracle(mix, VESDE(1e-4, 50.0))
        opts = {**OPTS, "repeats": repeats}
        return bits_per_dim_eval(model, _Images(u8), info, opts, n, seed=seed, device="cpu")

    mv, once = run(3), run(1)
    g = torch.Generator().manual_seed(seed)
    per = torch.stack(
        [
            -mixture_logpdf(dequantize(u8, g), [1.0], [[0.5] * D], std) / (D * math.log(2)) + 8
            for _ in range(3)
        ]
    )  # (repeats, n)
    assert mv.extra["repeats"] == 3 and mv.n_samples == n
    assert once.value == pytest.approx(float(per[0].mean()), abs=0.01)
    assert mv.value == pytest.approx(float(per.mean()), abs=0.01)
    # The three draws differ: the mean is more than the tolerance away from each one of them.
    assert min(abs(float(per.mean() - p.mean())) for p in per) > 0.02
    # The standard error is over images, of each image's mean over the repeats.
    assert mv.stderr == pytest.approx(float(per.mean(0).std() / math.sqrt(n)), rel=0.05)
