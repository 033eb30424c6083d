"""The FID path end to end, offline: torch-fidelity's real Inception-v3 architecture with random
weights, saved where ``metrics.fid_weights_path`` points (the real weights are a download)."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from miri_lightning.data.sample import sample_images
from miri_lightning.fid import fid, inception_features
from miri_lightning.run import train


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A state dict of FeatureExtractorInceptionV3 (every layer, random weights) in a .pth file."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    patch = pytest.MonkeyPatch()
    patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, strict=True: None)
    patch.setattr(torch, "load", lambda *args, **kwargs: {})
    try:
        network = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], "unused")
    finally:
        patch.undo()
    # He-initialised convolutions keep the activations alive through the 94 layers (the default
    # init shrinks them towards 0, and every image would get the same features)
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
    path = tmp_path_factory.mktemp("weights") / "random-inception.pth"
    torch.save(network.state_dict(), path)
    return path


def test_fid_of_a_set_with_itself_is_zero_and_grayscale_works(random_inception):
    features = inception_features(str(random_inception))
    x = sample_images(4, 16, seed=0).float() / 255
    assert features(x).shape == (4, 2048)
    assert fid(x, x, features) == pytest.approx(0.0, abs=1e-3)
    gray = x.mean(1, keepdim=True)  # one channel in, features out
    assert fid(gray, (gray + 0.3).clamp(0, 1), features) > 1.0


def test_round_fid_is_logged_every_round_on_grayscale_images(tiny_config, random_inception, tmp_path):
    from PIL import Image

    folder = tmp_path / "gray"
    folder.mkdir()
    for i, image in enumerate(sample_images(24, 16, seed=1)):
        Image.fromarray(image.float().mean(0).round().byte().numpy()).save(folder / f"{i:02d}.png")
    run = train(
        tiny_config(
            "metrics.fid=true",
            f"metrics.fid_weights_path={random_inception}",
            "data=folder",
            f"data.root={folder}",
            "data.channels=1",
            "data.n=24",
            "metrics.max_images=8",
            "miri.rounds=1",
        )
    )
    assert [("fid" in record) for record in run.miri.history] == [True, True]
    assert all(record["fid"] > 1e-6 for record in run.miri.history)  # imputed images are not the truth
    events = EventAccumulator(str(run.output_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    logged = events.Scalars("round/fid")
    assert [e.step for e in logged] == [0, 10]
    assert [e.value for e in logged] == pytest.approx([r["fid"] for r in run.miri.history], rel=1e-4)
