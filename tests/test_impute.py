"""miri-impute on images a run has not seen."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from miri_lightning import flow
from miri_lightning.impute_cli import main
from miri_lightning.inference import RunFlows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def trained(tiny_run):
    return tiny_run.output_dir


def write_inputs(folder: Path, masks: Path, count: int = 3, size: int = 16):
    folder.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    images, observed = {}, {}
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = np.full((size, size), 255, np.uint8)
        if i > 0:  # image 0 has no holes
            mask[rng.random((size, size)) < 0.5] = 0
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        Image.fromarray(mask).save(masks / f"img{i}.png")
        images[f"img{i}"], observed[f"img{i}"] = pixels, mask > 0
    return images, observed


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_cli_fills_holes_keeps_observed_pixels_and_shows_uncertainty(trained, tmp_path):
    images, observed = write_inputs(tmp_path / "in", tmp_path / "masks")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "scripts/impute.py", "--run", str(trained), "--input", str(tmp_path / "in"),
         "--masks", str(tmp_path / "masks"), "--output", str(out), "--num-samples", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("have no holes: passed through unchanged") == 1
    for name, pixels in images.items():
        o = observed[name]
        samples = [read(out / f"{name}_sample{k}.png") for k in range(3)]
        for sample in samples + [read(out / f"{name}_mean.png")]:
            assert np.array_equal(sample[o], pixels[o])  # exactly, after the uint8 round trip
        std = read(out / f"{name}_std.png")
        assert (std[o] == 0).all()
        if (~o).any():
            assert not np.array_equal(samples[0][~o], samples[1][~o])  # different draws differ
            assert std[~o].max() > 0
        else:
            assert all(np.array_equal(s, pixels) for s in samples)
    archive = np.load(out / "imputations.npz")
    assert archive["samples"].shape == (3, 3, 3, 16, 16) and list(archive["names"]) == list(images)
    # the draws are the run's flows applied, in order, to the run's own fill (its deterministic
    # fill plus its noise, seeded as the CLI seeds draw 0), rebuilt here from flow.py's pieces
    # and the run's config, not through RunFlows.sample; and they are not that fill
    x = torch.from_numpy(np.stack([images[n] for n in images])).permute(0, 3, 1, 2).float() / 255
    o = torch.from_numpy(archive["observed"])
    cfg = OmegaConf.load(trained / "config.yaml").miri
    sigma = cfg.sample_noise if cfg.sample_noise is not None else cfg.init_noise
    base = flow.deterministic_fill(x, o, cfg.init)
    fill = flow.perturb(base, o, sigma, torch.Generator().manual_seed(0), (0.0, 1.0), cfg.init_noise_mode)
    y = fill
    with torch.no_grad():
        for net in RunFlows(trained).imputers:  # miri.coupling=fill: the last round's flow alone
            y = flow.impute(net, y, o, cfg.ode_steps, cfg.solver, (0.0, 1.0))
    assert np.allclose(archive["samples"][0], y.numpy(), atol=1e-6)
    moved = np.abs(archive["samples"][0] - fill.numpy())[~archive["observed"]].mean()
    assert moved > 0.01, moved


def test_cli_hole_colour_and_bad_inputs(trained, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = np.full((16, 16, 3), 120, np.uint8)
    pixels[4:8, 4:8] = (255, 0, 255)
    Image.fromarray(pixels).save(folder / "a.png")
    out = tmp_path / "out"
    assert main(["--run", str(trained), "--input", str(folder), "--hole-color", "255,0,255", "--output", str(out)]) == 0
    filled = read(out / "a_sample0.png")
    assert (filled[4:8, 4:8] != (255, 0, 255)).any(axis=-1).all()
    assert (filled[:4] == 120).all()

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "big.png")
    assert main(["--run", str(trained), "--input", str(folder), "--hole-color", "0,0,0", "--output", str(out)]) == 1
    assert "big.png is 20×20 but the model takes 16×16: pass --resize" in capsys.readouterr().err
    args = ["--input", str(folder), "--hole-color", "0,0,0", "--output", str(out)]
    with pytest.warns(UserWarning, match="1 images have every pixel missing"):  # big.png is all hole colour
        assert main(["--run", str(trained), *args, "--resize"]) == 0
    assert main(["--run", str(tmp_path), *args]) == 1
    assert "holds no flows" in capsys.readouterr().err


def test_export_writes_pngs_masks_and_npz_of_a_round(trained, tmp_path):
    from safetensors.torch import load_file

    result = subprocess.run(
        [sys.executable, "scripts/export.py", f"output_dir={trained}", "round=1", f"to={tmp_path / 'x'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    snapshot = load_file(trained / "imputed" / "round_001.safetensors")
    archive = np.load(tmp_path / "x" / "round_001.npz")
    assert np.array_equal(archive["imputed"], snapshot["imputed"].numpy())
    assert np.array_equal(archive["observed"], snapshot["observed"].numpy())
    assert len(list((tmp_path / "x" / "imputed").glob("*.png"))) == snapshot["imputed"].shape[0]
    first = read(tmp_path / "x" / "imputed" / "00000.png")
    expected = (snapshot["imputed"][0] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(first, expected)
    assert np.array_equal(read(tmp_path / "x" / "masks" / "00000.png") > 0, snapshot["observed"][0].all(0).numpy())


@pytest.mark.parametrize("sample_noise", [None, 0.0])
def test_draws_after_training_take_the_fill_noise_of_miri_sample_noise(tiny_run, tiny_run_copy, sample_noise):
    # the session's run, its config.yaml saying miri.sample_noise=<sample_noise> (what RunFlows reads)
    run_dir = tiny_run_copy
    config = OmegaConf.load(run_dir / "config.yaml")
    assert config.miri.init_noise > 0
    config.miri.sample_noise = sample_noise
    OmegaConf.save(config, run_dir / "config.yaml")
    store = tiny_run.datamodule.store
    x, observed = store.imputed[:8].float(), store.observed[:8]
    samples = RunFlows(run_dir).sample(x, observed, num_samples=2, seed=0)
    spread = (samples[0] - samples[1]).abs().max().item()
    # null: the training fill's σ (init_noise > 0), so two draws differ; 0: every draw is the same
    assert (spread > 1e-3) if sample_noise is None else (spread == 0.0)
    assert torch.equal(samples[:, observed], x[observed].expand(2, -1))
    if sample_noise is None:  # miri-impute --noise 0 overrides the run's σ: identical draws
        array = torch.where(observed, x, float("nan")).numpy()
        np.save(run_dir / "holes.npy", array)
        out = run_dir / "filled"
        args = ["--run", str(run_dir), "--array", str(run_dir / "holes.npy"), "--output", str(out)]
        assert main([*args, "--num-samples", "2", "--noise", "0"]) == 0
        drawn = np.load(out / "imputations.npz")["samples"]
        assert np.array_equal(drawn[0], drawn[1])
        assert main([*args, "--noise", "-1"]) == 1
