"""sampler=dpmpp through the real entry point: the oracle of NCSN's mixture (weights 0.2/0.8)
sampled with DPM-Solver++ 2M and 3M, on VE and VP, gives the small mode's weight at 20 NFE."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli import run_cli


@pytest.mark.parametrize(("sde", "order"), [("ve", 2), ("vp", 3)])
def test_dpmpp_on_the_oracle_mixture(tmp_path, sde: str, order: int) -> None:
    out = tmp_path / "out"
    run_cli(
        "sample",
        [
            "model=oracle",
            "data=gmm",
            f"sde={sde}",
            "sampler=dpmpp",
            f"sampler.order={order}",
            "n_samples=6000",
            "batch_size=6000",
            f"hydra.run.dir={out}",
        ],
    )
    x = np.load(out / "samples.npz")["samples"]
    info = json.loads((out / "sample_info.json").read_text())
    assert info["nfe"] == 20 and info["sampler"]["name"] == "dpmpp"
    assert info["sampler"]["order"] == order
    small = x[:, 0] < 0
    assert abs(small.mean() - 0.2) < 0.03, small.mean()
    # each mode's mean within 0.1 of its centre (unit-variance components)
    assert np.abs(x[small].mean(0) - (-5.0)).max() < 0.1
    assert np.abs(x[~small].mean(0) - 5.0).max() < 0.1
