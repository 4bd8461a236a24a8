"""benchmarks/progress_rates.py reads step rates back from a training log's progress bar."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "progress_rates", REPO / "benchmarks/progress_rates.py"
)
progress_rates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(progress_rates)

# A training bar redrawn with carriage returns, a validation bar in between (skipped) and an
# elapsed time past one hour; the figures below follow from these marks by hand.
LOG = (
    "Epoch 0:   1%|          | 10/1500 [00:05<1:00:00,  2.00it/s]\r"
    "Epoch 0:  17%|█▋        | 250/1500 [00:20<01:00, 12.50it/s, train/loss=0.2]\r"
    "Validation DataLoader 0: 100%|██████████| 2/2 [00:00<00:00, 50.00it/s]\r\n"
    "Epoch 1:  50%|█████     | 750/1500 [00:50<00:50, 15.00it/s]\r"
    "Epoch 3: 100%|██████████| 1500/1500 [1:01:30<00:00,  0.41it/s, val/loss=0.1]\n"
    "`Trainer.fit` stopped: `max_steps=1500` reached.\n"
)


def test_rates_from_a_known_log() -> None:
    r = progress_rates.rates(LOG, first=10, from_step=250)
    assert r["steps"] == 1500
    assert r["bar_seconds"] == 3690
    assert r["seconds_to_step_10"] == 5
    assert r["steps_per_s_from_250"] == pytest.approx(1250 / 3670, abs=0.005)


def test_writes_json_and_markdown(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text(LOG)
    progress_rates.main(["--device-name", "cpu", "--tag", "t", "--out", str(tmp_path), f"a={log}"])
    data = json.loads((tmp_path / "rates_t.json").read_text())
    assert data["rows"][0]["run"] == "a" and data["rows"][0]["steps"] == 1500
    assert "| a | 1500 | 3690 | 5 | 0.34 |" in (tmp_path / "rates_t.md").read_text()


def test_a_log_without_a_bar_is_refused() -> None:
    with pytest.raises(ValueError, match="no training progress bar"):
        progress_rates.rates("nothing here\n", first=10, from_step=250)
