"""benchmarks/profile_step.py: operators sorted into categories, and a tiny profiled run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("profile_step", REPO / "benchmarks/profile_step.py")
profile_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_step)


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("aten::convolution_backward", "convolution"),
        ("aten::mkldnn_convolution", "convolution"),
        ("autograd::engine::evaluate_function: ConvolutionBackward0", "convolution"),
        ("aten::native_group_norm_backward", "normalisation"),
        ("aten::silu_backward", "activation"),
        ("aten::addmm", "matmul / attention"),
        ("aten::mm", "matmul / attention"),
        ("aten::_softmax", "matmul / attention"),
        ("Optimizer.step#Adam.step", "optimizer + EMA"),
        ("aten::_fused_adam_", "optimizer + EMA"),
        ("aten::lerp_", "optimizer + EMA"),
        ("aten::linalg_vector_norm", "optimizer + EMA"),
        ("aten::copy_", "copies / casts"),
        ("aten::to", "copies / casts"),
        ("aten::add", "other"),
        ("aten::empty_strided", "other"),
        ("aten::cat", "other"),
    ],
)
def test_category_of_known_operators(op: str, expected: str) -> None:
    assert profile_step.category(op) == expected


def test_tiny_profile_writes_json_and_markdown(tmp_path: Path) -> None:
    args = ["experiment=mnist_demo", "--tag", "t", "--batch", "2", "--steps", "1", "--rounds", "1"]
    args += ["--variant", "cl=module.channels_last=true", "--out", str(tmp_path)]
    assert profile_step.main(args) == 0
    report = json.loads((tmp_path / "profile_t.json").read_text())
    assert list(report["variants"]) == ["base", "cl"]
    assert report["overrides"]["cl"] == ["experiment=mnist_demo", "module.channels_last=true"]
    for v in report["variants"].values():
        assert v["s_per_step"] > 0
        # the categories partition the operators' self time (each rounded to 0.01 ms)
        assert sum(v["categories_ms"].values()) == pytest.approx(
            v["profiled_ms_per_step"], abs=0.01 * (len(v["categories_ms"]) + 1)
        )
        assert v["categories_ms"]["convolution"] > 0
    md = (tmp_path / "profile_t.md").read_text()
    assert "| base |" in md and "| cl |" in md


def test_bad_variant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        profile_step.main(["--tag", "t", "--variant", "no_equals_sign", "--out", str(tmp_path)])
