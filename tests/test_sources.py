"""Real on-disk formats, written small: CIFAR-10 batches, CelebA, folders, arrays."""

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from miri_lightning.data.cifar10 import FOLDER, load_cifar10
from miri_lightning.data.sources import ArraySource, CelebASource, FolderSource
from miri_lightning.masks import BlockMask
from miri_lightning.run import train


def write_cifar(root: Path, per_batch: int = 6) -> np.ndarray:
    """The python version's files, as the official pickles hold them (a dict with bytes keys)."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    everything = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        everything.append(data)
    return np.concatenate(everything)


def test_cifar10_batches_are_read_with_a_checksum_warning(tmp_path):
    written = write_cifar(tmp_path)
    with pytest.warns(UserWarning, match="differs from the official CIFAR-10 file"):
        train_images = load_cifar10(tmp_path, "train")
    assert train_images.shape == (30, 3, 32, 32) and train_images.dtype == torch.uint8
    assert np.array_equal(train_images.reshape(30, -1).numpy(), written[:30])
    with pytest.warns(UserWarning):
        assert load_cifar10(tmp_path, "test").shape == (6, 3, 32, 32)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_cifar_batch_cannot_run_code(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    batch = tmp_path / FOLDER / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": Payload(marker)}, protocol=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR-10 python batch.*system is not allowed"):
            load_cifar10(tmp_path, "train")
    assert not marker.exists()


def test_absent_cifar_files_say_where_to_put_what(tmp_path):
    with pytest.raises(ValueError, match=r"cifar-10-batches-py.*data\.download=true"):
        load_cifar10(tmp_path, "train")


def test_train_runs_a_round_on_cifar10(tiny_config, tmp_path):
    write_cifar(tmp_path / "data")
    cfg = tiny_config(
        "data=cifar10", f"data.root={tmp_path / 'data'}", "data.n=20", "data.image_size=32", "miri.rounds=1"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = train(cfg)
    assert run.datamodule.store.imputed.shape == (20, 3, 32, 32)
    assert (run.output_dir / "imputed" / "round_001.safetensors").is_file()


def write_celeba(root: Path, count: int = 9) -> None:
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for i in range(1, count + 1):
        pixels = np.full((218, 178, 3), i * 20, np.uint8)
        pixels[100:120, 80:100] = 255  # a bright patch at the centre, inside the 140 crop
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {(i - 1) % 3}")
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def test_celeba_layout_splits_and_crop(tmp_path):
    write_celeba(tmp_path)
    train_set = CelebASource(str(tmp_path), split="train", image_size=16).load().values
    assert train_set.shape == (3, 3, 16, 16)
    assert CelebASource(str(tmp_path), split="all", image_size=16).load().values.shape[0] == 9
    # the centre crop keeps the bright patch in the middle of the image
    assert train_set.dtype == torch.uint8
    assert train_set[0, :, 8, 8].min() > 230 and train_set[0, :, 0, 0].max() < 50
    # a plain folder of the JPEGs (no partition file) works for split=all and explains split=train
    plain = tmp_path / "celeba" / "img_align_celeba"
    assert CelebASource(str(plain), split="all", image_size=16).load().values.shape[0] == 9
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(ValueError, match="list_eval_partition.txt"):
        CelebASource(str(plain), split="train").load()


def test_train_runs_a_round_on_celeba(tiny_config, tmp_path, capsys):
    write_celeba(tmp_path / "data", count=12)
    run = train(tiny_config("data=celeba", f"data.root={tmp_path / 'data'}", "data.split=all", "miri.rounds=1"))
    assert run.datamodule.store.imputed.shape == (12, 3, 16, 16)
    if not torch.cuda.is_available():  # the GPU recipe of data=celeba, said once on a CPU-only machine
        assert capsys.readouterr().out.count("brings a recipe sized for a GPU") == 1


def write_folder(root: Path) -> None:
    (root / "nested").mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA").save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 50), dtype=np.uint8), "L").save(root / "nested" / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "nested" / "c.PNG")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_of_mixed_images_skips_a_corrupt_file_by_name(tmp_path, channels):
    write_folder(tmp_path)
    with pytest.warns(UserWarning, match="skipping .*broken.png"):
        loaded = FolderSource(str(tmp_path), image_size=16, channels=channels).load()
    assert loaded.values.shape == (3, channels, 16, 16) and loaded.has_truth


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(ValueError, match="holds no image files"):
        FolderSource(str(tmp_path)).load()
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 image files"):
        FolderSource(str(tmp_path)).load()


def test_folder_with_mask_images_matched_by_name(tiny_config, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_folder(images)
    (images / "broken.png").unlink()
    for relative in ("a", "nested/b", "nested/c"):
        mask = np.full((16, 16), 255, np.uint8)
        mask[:, :8] = 0  # left half missing
        (masks / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(masks / f"{relative}.png")
    loaded = FolderSource(str(images), image_size=16, mask_root=str(masks)).load()
    assert loaded.observed.shape == (3, 3, 16, 16)
    assert not loaded.observed[..., :8].any() and loaded.observed[..., 8:].all()
    run = train(
        tiny_config("data=folder", f"data.root={images}", f"data.mask_root={masks}", "mask=given", "miri.rounds=1")
    )
    assert torch.equal(run.datamodule.store.observed, loaded.observed)
    (masks / "nested" / "c.png").unlink()
    with pytest.raises(ValueError, match="no mask image for .*c.PNG"):
        FolderSource(str(images), image_size=16, mask_root=str(masks)).load()


def test_train_runs_a_round_on_a_folder(tiny_config, tmp_path):
    write_folder(tmp_path / "pics")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = train(tiny_config("data=folder", f"data.root={tmp_path / 'pics'}", "miri.rounds=1", "mask.rate=0.5"))
    assert run.datamodule.store.imputed.shape == (3, 3, 16, 16)


def nan_images(n=12, layout="nhwc"):
    rng = np.random.default_rng(2)
    images = rng.random((n, 16, 16, 3)).astype(np.float32)
    holes = rng.random((n, 16, 16)) < 0.4
    images[holes] = np.nan
    return (images if layout == "nhwc" else images.transpose(0, 3, 1, 2)), holes


def test_array_with_nan_trains_imputes_and_skips_truth_metrics(tiny_config, tmp_path, capsys):
    images, holes = nan_images()
    np.save(tmp_path / "x.npy", images)
    run = train(tiny_config("data=array", f"data.path={tmp_path / 'x.npy'}", "data.image_size=16", "miri.rounds=2"))
    store = run.datamodule.store
    assert store.truth is None and torch.equal(store.observed[:, 0], torch.from_numpy(~holes))
    assert torch.isfinite(store.imputed).all()
    observed_values = torch.from_numpy(np.nan_to_num(images.transpose(0, 3, 1, 2)))
    assert torch.equal(store.imputed[store.observed], observed_values[store.observed])
    assert [set(h) for h in run.miri.history] == [{"round", "seconds", "clock"}] * 3  # no metric without truth
    assert "no ground truth: metrics skipped" in capsys.readouterr().out
    assert (run.output_dir / "imputed" / "round_002.safetensors").is_file()


def test_array_with_mask_file_in_npz_and_pt(tmp_path):
    images, holes = nan_images(layout="nchw")
    filled = np.nan_to_num(images)
    np.savez(tmp_path / "x.npz", images=filled)
    np.save(tmp_path / "mask.npy", ~holes)  # N×H×W: whole pixels
    loaded = ArraySource(str(tmp_path / "x.npz"), str(tmp_path / "mask.npy"), image_size=16, channels=3).load()
    assert torch.equal(loaded.observed, torch.from_numpy(~holes)[:, None].expand(-1, 3, -1, -1))
    torch.save(torch.from_numpy(images), tmp_path / "x.pt")
    assert torch.equal(ArraySource(str(tmp_path / "x.pt")).load().observed, loaded.observed)


def test_bad_arrays_get_messages_that_name_them(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((4, 10)))
    with pytest.raises(ValueError, match="flat.npy has shape"):
        ArraySource(str(tmp_path / "flat.npy")).load()
    images, _ = nan_images()
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "small.npy", np.ones((12, 8, 8), bool))
    with pytest.raises(ValueError, match="small.npy has shape"):
        ArraySource(str(tmp_path / "x.npy"), str(tmp_path / "small.npy")).load()
    images[3] = np.nan
    np.save(tmp_path / "empty.npy", images)
    with pytest.warns(UserWarning, match="1 images of .*empty.npy have every entry missing"):
        ArraySource(str(tmp_path / "empty.npy")).load()
    with pytest.raises(ValueError, match="does not exist"):
        ArraySource(str(tmp_path / "nope.npy")).load()


def test_given_masks_need_data_that_have_one_and_vice_versa(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="mask=given, but these data come without a mask"):
        train(tiny_config("mask=given"))
    images, _ = nan_images()
    np.save(tmp_path / "x.npy", images)
    with pytest.raises(ValueError, match="use mask=given"):
        train(tiny_config("data=array", f"data.path={tmp_path / 'x.npy'}", "data.image_size=16", "mask=pixel"))


def test_block_masks_cut_square_holes_reproducibly():
    observed = BlockMask(size=5, holes=1, seed=3)((20, 3, 16, 16))
    assert torch.equal(observed, BlockMask(size=5, holes=1, seed=3)((20, 3, 16, 16)))
    assert torch.equal(observed, observed[:, :1].expand_as(observed))
    missing = ~observed[:, 0]
    assert (missing.sum((1, 2)) == 25).all()
    for hole in missing:
        rows, cols = hole.nonzero(as_tuple=True)
        assert rows.max() - rows.min() == 4 and cols.max() - cols.min() == 4
    with pytest.raises(ValueError, match="mask.size"):
        BlockMask(size=16)((1, 3, 16, 16))
