"""``scorelab.evaluate`` on saved points, an image folder and the oracle, and its refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import TOY_EVAL, compose_cfg, mixture_logpdf, ncsn_mixture_entropy
from PIL import Image

from scorelab.evaluate import evaluate, load_samples
from scorelab.lit.build import ConfigError
from scorelab.metrics.fid import FeatureStatistics, save_statistics
from scorelab.metrics.mnist import MnistClassifier
from scorelab.metrics.suite import MetricConfigError, build_metric_suite
from scorelab.runs import entry_point
from scorelab.toy import ncsn_toy_mixture


def _read(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _sliced_w2_2d(x: torch.Tensor, y: torch.Tensor, n_angles: int = 3600) -> float:
    """Sliced W2 of two equal-size 2-D samples by quadrature over the directions (not random
    ones): SW2² = (1/π) ∫_0^π W2²(θᵀx, θᵀy) dφ with θ = (cos φ, sin φ)."""
    phi = (torch.arange(n_angles, dtype=torch.float64) + 0.5) * math.pi / n_angles
    theta = torch.stack([phi.cos(), phi.sin()])
    px, py = (x.double() @ theta).sort(0).values, (y.double() @ theta).sort(0).values
    return float(((px - py) ** 2).mean().sqrt())


def test_points_npz_from_the_true_mixture_score_at_the_noise_floor(tmp_path):
    """Exact mixture samples: every metric is at its true-sample value, each computed here."""
    x = ncsn_toy_mixture().sample(400, generator=torch.Generator().manual_seed(5))
    np.savez(tmp_path / "samples.npz", samples=x.numpy())
    (tmp_path / "sample_info.json").write_text(
        json.dumps({"sampler": {"name": "exact"}, "nfe": 0, "wall_time_s": 0.0})
    )
    out = tmp_path / "run"
    evaluate(compose_cfg("evaluate", [f"samples_path={tmp_path / 'samples.npz'}", *TOY_EVAL], out))
    m = _read(out)
    assert m["status"] == "ok" and m["source"]["kind"] == "samples"
    assert set(m["metrics"]) >= {"sliced_w2", "mmd", "mode_weight_error", "exact_nll"}
    r = m["results"]
    for name in ("sliced_w2", "mmd", "mode_weight_error", "exact_nll"):
        assert r[name]["n_samples"] == 400 and r[name]["sampler"] == {"name": "exact"}
        assert r[name]["nfe"] == 0 and r[name]["wall_time_s"] >= 0
    # The reference and the floor's second sample: two draws of 400 (toy.n_reference) from the
    # mixture with toy.seed = 1. Sliced W2 here by quadrature over directions; the evaluation's
    # 64 random directions agree within 5%.
    g = torch.Generator().manual_seed(1)
    ref, ref2 = (
        ncsn_toy_mixture().sample(400, generator=g),
        ncsn_toy_mixture().sample(400, generator=g),
    )
    sw, floor = _sliced_w2_2d(x, ref), _sliced_w2_2d(ref2, ref)
    assert r["sliced_w2"]["value"] == pytest.approx(sw, rel=0.05)
    assert r["sliced_w2"]["true_sample_floor"] == pytest.approx(floor, rel=0.05)
    # SW2 of 400 true points against 400 more: at the floor, so within 2x.
    assert r["sliced_w2"]["value"] < 2 * floor
    # Mode weight 0.2 estimated from 400 points: s.e. 0.02; allow 4 s.e.
    assert r["mode_weight_error"]["value"] < 0.08
    # Unbiased MMD² of two samples of one law: |value| below 0.01 at these sizes.
    assert abs(r["mmd"]["value"]) < 0.01
    # Exact NLL: -log p of the samples, and for true samples its mean is the entropy.
    nll = r["exact_nll"]
    assert nll["value"] == pytest.approx(float(-mixture_logpdf(x).mean()), abs=1e-9)
    assert nll["true_sample_value"] == pytest.approx(float(-mixture_logpdf(ref).mean()), abs=1e-9)
    assert abs(nll["value"] - ncsn_mixture_entropy()) < 4 * nll["stderr"]
    assert abs(nll["true_sample_value"] - ncsn_mixture_entropy()) < 4 * nll["stderr"]


def _classifier(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(MnistClassifier().state_dict(), path)
    return path


def _pngs(folder: Path, n: int, size: int = 28, mode: str = "L") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
            folder / f"{i:03d}.png"
        )
    return folder


def _mnist_cfg(mnist_root: Path, tmp_path: Path, samples: Path, *overrides: str):
    """An evaluate config for ``samples`` on the MNIST fixture with an untrained classifier,
    writing to ``tmp_path / "run"``."""
    return compose_cfg(
        "evaluate",
        [
            f"samples_path={samples}",
            *overrides,
            "data=mnist",
            f"data.root={mnist_root}",
            f"mnist.classifier_path={_classifier(tmp_path / 'cls.pt')}",
        ],
        tmp_path / "run",
    )


def test_image_folder_with_the_mnist_classifier(tmp_path, mnist_root):
    folder = _pngs(tmp_path / "imgs", 12)
    out = tmp_path / "run"
    evaluate(_mnist_cfg(mnist_root, tmp_path, folder))
    m = _read(out)
    r = m["results"]
    assert m["data"] == {"name": "mnist", "shape": [1, 28, 28]}
    assert set(r) == {"mnist_fid", "classifier_score", "mode_coverage"}
    assert math.isfinite(r["mnist_fid"]["value"]) and r["mnist_fid"]["value"] >= 0
    assert r["mnist_fid"]["n_reference"] == 64  # the fixture's 64 training digits
    assert 1.0 <= r["classifier_score"]["value"] <= 10.0
    assert r["mode_coverage"]["covered"] / 10 == r["mode_coverage"]["value"]
    assert abs(sum(r["mode_coverage"]["histogram"]) - 1) < 1e-6
    # Reference statistics were cached under the run's cache dir, keyed by the classifier.
    cached = list((out / "cache" / "fid_stats").glob("mnist-train-28px-mnist-classifier-*.npz"))
    assert len(cached) == 1


def test_oracle_samples_and_bpd(tmp_path):
    out = tmp_path / "run"
    evaluate(
        compose_cfg(
            "evaluate",
            [
                "sampler=pc",
                "sde.N=50",
                "n_samples=200",
                "bpd.n=32",
                "metrics=[sliced_w2,mode_weight_error,bpd]",
                *TOY_EVAL,
            ],
            out,
        )
    )
    m = _read(out)
    r = m["results"]
    assert m["source"]["kind"] == "oracle" and m["nfe"] == 100  # 50 predictor + 50 corrector
    assert r["sliced_w2"]["sampler"]["name"] == "pc" and r["sliced_w2"]["nfe"] == 100
    # PC-50 on the exact score: the 0.2 mode keeps its weight within 0.1 on 200 samples.
    assert r["mode_weight_error"]["value"] < 0.1
    assert r["bpd"]["unit"] == "nats/dim" and r["bpd"]["n_data"] == 32
    assert r["bpd"]["sampler"]["name"] == "probability_flow_ode_likelihood"


def test_oracle_bpd_is_the_exact_nll_per_dimension(tmp_path):
    """The value itself: -log p / D of the first 32 test points under the mixture, from the
    density written out in the test. The exact divergence has no estimator noise; the VP prior
    N(0, I) misses p_1 by a mean offset of 0.02 (measured error 0.005 nats/dim)."""
    from hydra.utils import instantiate

    from scorelab.lit.build import DATA_META_KEYS

    out = tmp_path / "run"
    overrides = ["sde=vp", "bpd.n=32", "bpd.divergence=exact", "metrics=[bpd]", *TOY_EVAL]
    cfg = compose_cfg("evaluate", overrides, out)
    evaluate(cfg)
    bpd = _read(out)["results"]["bpd"]
    dm = instantiate({k: v for k, v in cfg.data.items() if k not in DATA_META_KEYS})
    dm.setup("test")
    x = torch.cat(list(dm.test_dataloader()))[:32]
    exact = float(-mixture_logpdf(x).mean() / 2)
    assert bpd["unit"] == "nats/dim" and bpd["n_data"] == 32
    assert bpd["value"] == pytest.approx(exact, abs=0.01)
    assert bpd["exact_value"] == pytest.approx(exact, abs=1e-9)


def test_load_samples_rejects_other_arrays_and_mixed_images(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="not 'samples'"):
        load_samples(tmp_path / "a.npz")
    folder = _pngs(tmp_path / "mixed", 2)
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(folder / "z.png")
    with pytest.raises(ConfigError, match="one size"):
        load_samples(folder)
    x, _ = load_samples(_pngs(tmp_path / "u8", 2))
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1


def _npz_in_minus_one_one(folder: Path) -> Path:
    x = torch.rand(8, 1, 28, 28) * 2 - 1  # [-1, 1]: not mapped back to [0, 1]
    np.savez(folder / "samples.npz", samples=x.numpy())
    return folder / "samples.npz"


@pytest.mark.parametrize(
    "samples, match",
    [
        (_npz_in_minus_one_one, r"must lie in \[0, 1\].*\(x \+ 1\) / 2"),
        (lambda p: _pngs(p / "rgb", 4, mode="RGB"), r"shape \(4, 3, 28, 28\).*\(N, 1, 28, 28\)"),
    ],
    ids=["out_of_range", "wrong_channels"],
)
def test_images_the_mnist_metrics_cannot_take_are_refused(tmp_path, mnist_root, samples, match):
    with pytest.raises(MetricConfigError, match=match):
        evaluate(_mnist_cfg(mnist_root, tmp_path, samples(tmp_path)))


def test_stats_file_from_another_extractor_is_refused(tmp_path, mnist_root):
    stats = tmp_path / "other.npz"
    save_statistics(
        stats, FeatureStatistics(np.zeros(128), np.eye(128), "k", "inception:2048", 100)
    )
    cfg = _mnist_cfg(
        mnist_root,
        tmp_path,
        _pngs(tmp_path / "imgs", 4),
        f"mnist.reference_stats={stats}",
        "metrics=[mnist_fid]",
    )
    with pytest.raises(MetricConfigError, match="feature extractor 'inception:2048'"):
        evaluate(cfg)


CIFAR = {
    "_target_": "scorelab.data.images.CIFAR10DataModule",
    "image_size": 32,
    "channels": 3,
    "dim": 3072,
}


def test_too_few_samples_for_kid_before_sampling(cifar_root):
    suite = build_metric_suite({**CIFAR, "root": str(cifar_root)}, ["kid"])
    with pytest.raises(MetricConfigError, match=r"n_samples=10 .* 1000 .*kid.subset_size"):
        suite.check(10)


def test_missing_inception_weights_name_the_command(tmp_path, cifar_root, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    suite = build_metric_suite({**CIFAR, "root": str(cifar_root)}, ["fid"])
    with pytest.raises(MetricConfigError, match=r"at .*empty_torch_home.*make fid-weights"):
        suite.check(100)


def test_metric_that_does_not_fit_the_data(cifar_root):
    with pytest.raises(MetricConfigError, match=r"'sliced_w2' does not apply to data cifar10"):
        build_metric_suite({**CIFAR, "root": str(cifar_root)}, ["sliced_w2"])


def test_missing_classifier_is_one_line_with_the_command(tmp_path, mnist_root, capsys):
    """Through the entry point's error handling: exit code 2, one line, the exact command.
    The data files exist (the tiny fixture), so the classifier is the only thing missing."""
    missing = tmp_path / "nope.pt"
    folder = _pngs(tmp_path / "imgs", 4)
    cfg = compose_cfg(
        "evaluate",
        [
            "data=mnist",
            f"data.root={mnist_root}",
            f"samples_path={folder}",
            f"mnist.classifier_path={missing}",
        ],
        tmp_path / "run",
    )
    with pytest.raises(SystemExit) as exit_info:
        entry_point(evaluate)(cfg)
    assert exit_info.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert lines == [
        f"error: MNIST classifier weights not found at {missing}; train them with: "
        f"python -m scorelab.metrics.mnist_classifier --data-dir data/raw --out {missing}"
    ]
    assert not (tmp_path / "run" / "metrics.json").exists()
