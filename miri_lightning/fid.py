"""FID with torch-fidelity's Inception-v3 (the features torchmetrics uses), offline-aware."""

import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from miri_lightning.metrics import frechet_distance

#: The file torch-fidelity downloads into torch's hub cache.
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"

Features = Callable[[Tensor], Tensor]


def inception_weights(weights_path: str | None = None) -> Path:
    """Where the Inception weights are looked for: ``fid.weights_path`` if given, else
    ``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``)."""
    if weights_path:
        return Path(os.path.expanduser(weights_path))
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_features(
    weights_path: str | None = None, device: str | torch.device = "cpu", download: bool = True
) -> Features:
    """images (N, C, H, W) in [0, 1] -> Inception pool features (N, 2048).

    The weights are read from ``weights_path``, else from torch's hub cache; when they are not
    in the cache and ``download``, torch-fidelity's own download puts them there (needs the
    network, once). Raises FileNotFoundError naming the file to place when they cannot be had.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = inception_weights(weights_path)
    place = (
        f"FID needs the Inception weights {INCEPTION_FILE} at {path} (or set fid.weights_path); "
        "download them once on a machine that is online (torch-fidelity does it on first use)"
    )
    if path.is_file():
        torch.load(path, map_location="cpu", weights_only=True)  # refuse a file holding more than tensors
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    elif weights_path or not download:
        raise FileNotFoundError(place)
    else:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # a network that drops packets fails instead of hanging
        try:  # torch-fidelity downloads into torch.hub.get_dir()/checkpoints/, where ``path`` points
            network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        except OSError as error:  # offline: URLError, a timeout, a refused connection
            raise FileNotFoundError(f"{place} (the download failed: {error})") from error
        finally:
            socket.setdefaulttimeout(previous)
    network = network.to(device)

    def features(images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        as_bytes = (images.clamp(0, 1) * 255).round().to(torch.uint8).to(device)
        with torch.no_grad():
            return network(as_bytes)[0].cpu()

    return features


def fid(x: Tensor, y: Tensor, features: Features, batch_size: int = 200) -> float:
    """FID between image sets x and y (N, C, H, W) in [0, 1] under ``features``."""

    def embed(images: Tensor) -> Tensor:
        return torch.cat([features(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])

    return frechet_distance(embed(x), embed(y)).item()
