"""experiments/07_mnist_budget/least_confident.py orders samples by the classifier's confidence."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "least_confident", REPO / "experiments/07_mnist_budget/least_confident.py"
)
lc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lc)


class PixelLogits(nn.Module):
    """Logits = 10 × the first ten pixels of the top row: the test sets each sample's answer."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # the device is read from the parameters

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * x[:, 0, 0, :10]

    def fc2(self, f: torch.Tensor) -> torch.Tensor:
        return f


def _samples() -> torch.Tensor:
    x = torch.zeros(4, 1, 28, 28)
    x[0, 0, 0, 3] = 1.0  # digit 3, p = e^10 / (e^10 + 9): confident
    x[1, 0, 0, 5] = x[1, 0, 0, 8] = 0.5  # a 5/8 tie: p = 0.5 each, very unsure
    x[2, 0, 0, 2] = 0.6  # digit 2 ahead of the rest, p = e^6 / (e^6 + 9) = 0.978
    x[3, 0, 0, 7], x[3, 0, 0, 1] = 0.3, 0.1  # 7 then 1, unsure
    return x


def test_least_confident_orders_by_the_top_probability(monkeypatch) -> None:
    monkeypatch.setattr(lc, "load_mnist_classifier", PixelLogits)
    res = lc.least_confident(_samples(), n=3)
    got = [(r["index"], r["digits"]) for r in res["least_confident"]]
    assert got[0][0] == 1 and sorted(got[0][1]) == [5, 8]
    assert got[1] == (3, [7, 1])
    assert got[2][0] == 2 and got[2][1][0] == 2
    p7 = math.exp(3) / (math.exp(3) + math.exp(1) + 8)
    assert res["least_confident"][1]["probabilities"][0] == pytest.approx(p7, abs=1e-3)
    assert res["confident_share"] == 0.5  # samples 0 and 2


@pytest.mark.parametrize("uint8", [False, True])  # scorelab.sample writes float, evaluate uint8
def test_writes_the_grid_and_the_table(monkeypatch, tmp_path: Path, uint8: bool) -> None:
    monkeypatch.setattr(lc, "load_mnist_classifier", PixelLogits)
    x = _samples()
    x = (x * 255).round().to(torch.uint8) if uint8 else x
    np.savez(tmp_path / "s.npz", samples=x.numpy())
    assert lc.main([str(tmp_path / "s.npz"), "--n", "2", "--out", str(tmp_path / "o")]) == 0
    data = json.loads((tmp_path / "o/least_confident.json").read_text())
    assert [r["index"] for r in data["least_confident"]] == [1, 3]
    assert (tmp_path / "o/least_confident.png").stat().st_size > 0


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        lc.main([str(tmp_path / "none.npz"), "--out", str(tmp_path)])
