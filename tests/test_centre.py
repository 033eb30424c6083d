"""The learned centre (miri.init=learned): learned from hidden observed entries only."""

import pytest
import torch

from miri_lightning import centre, flow
from miri_lightning.callbacks.centre import centre_spec
from miri_lightning.nets import build_net


def tiny_centre(channels=3, size=16):
    torch.manual_seed(0)
    return build_net(centre_spec(channels, size, [8, 16]), "centre")


def test_hidden_entries_are_observed_ones_whole_pixels_for_pixel_masks():
    g = torch.Generator().manual_seed(0)
    pixel = (torch.rand(64, 1, 16, 16, generator=g) > 0.6).expand(-1, 3, -1, -1)
    kept = centre.hide(pixel, 0.15, g)
    assert not (kept & ~pixel).any()  # only observed entries are hidden
    assert (kept == kept[:, :1]).all()  # whole pixels
    assert (pixel & ~kept).sum() / pixel.sum() == pytest.approx(0.15, abs=0.02)
    channel = torch.rand(64, 3, 16, 16, generator=g) > 0.6
    kept = centre.hide(channel, 0.15, g)
    assert not (kept == kept[:, :1]).all()  # single entries


def test_an_untrained_centre_is_the_biharmonic_fill():
    x = torch.rand(4, 3, 16, 16)
    o = torch.rand(4, 3, 16, 16) > 0.6
    with torch.no_grad():
        assert torch.equal(centre.predict(tiny_centre(), x, o), flow.deterministic_fill(x, o, "biharmonic"))


def test_the_centre_learns_what_biharmonic_cannot_without_reading_a_missing_entry():
    """Random textures whose third channel copies the first, each channel missing on its own:
    biharmonic knows nothing of the copy, a centre trained on hidden observed entries learns it.
    The missing entries are NaN: a centre that read one would not train."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 16, 16, generator=g)
    x[:, 2] = x[:, 0]
    observed = torch.rand(x.shape, generator=g) > 0.5
    x = torch.where(observed, x, float("nan"))
    net = centre.fit_centre(tiny_centre(), x, observed, steps=150, batch_size=32, lr=5e-3, say=lambda _: None)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    learned, biharmonic = centre.held_out_psnr(net, x, observed)
    assert learned > biharmonic + 2.0, (learned, biharmonic)


LEARNED = ("miri.init=learned", "centre.steps=10", "centre.widths=[8,16]", "miri.rounds=1")


def test_a_learned_run_keeps_its_centre_reuses_it_on_resume_and_draws_with_it(tiny_config, capsys):
    from miri_lightning.inference import RunFlows
    from miri_lightning.run import train

    run = train(tiny_config(*LEARNED))
    out = run.output_dir
    printed = capsys.readouterr().out
    assert "dB on held-out observed entries, biharmonic" in printed and "centre: loaded" not in printed
    assert (out / "flows" / "centre.safetensors").is_file()
    saved = (out / "flows" / "centre.safetensors").read_bytes()
    train(tiny_config(*LEARNED[:-1], "miri.rounds=2", "ckpt_path=last"))
    assert "centre: loaded" in capsys.readouterr().out  # not trained again
    assert (out / "flows" / "centre.safetensors").read_bytes() == saved
    flows = RunFlows(out)
    assert flows.centre_net is not None
    observed = run.datamodule.store.observed[:4]
    x = torch.where(observed, torch.rand(observed.shape), 0)
    from miri_lightning.centre import predict

    with torch.no_grad():
        assert torch.allclose(flows.deterministic_fill(x, observed), predict(flows.centre_net, x, observed))
    (out / "flows" / "centre.safetensors").unlink()
    with pytest.raises(ValueError, match="miri.init=learned but holds no flows/centre.safetensors"):
        RunFlows(out)


def test_a_learned_centre_is_refused_for_tables_before_training(tmp_path):
    from conftest import QUIET, compose_config

    from miri_lightning.run import train

    cfg = compose_config(["data=toy", "miri.init=learned"], tmp_path / "run", base=QUIET)
    with pytest.raises(ValueError, match="miri.init=learned learns a centre of images"):
        train(cfg)
