"""Decode once: the uint8 cache of celeba / folder / cifar10 images in data.cache_dir."""

import errno
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_sources import write_celeba, write_cifar

from miri_lightning.data import cache
from miri_lightning.data.sources import CelebASource, Cifar10Source, FolderSource

ROOT = Path(__file__).resolve().parents[1]


def garble_in_place(path: Path) -> None:
    """Overwrite a file with bytes no decoder reads, keeping its size and mtime (so its
    fingerprint): a run that opens it fails or skips it."""
    stat = path.stat()
    path.write_bytes(b"\0" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json"))


def test_celeba_is_decoded_once_then_memory_mapped_without_opening_an_image(tmp_path):
    write_celeba(tmp_path / "data")
    cache_dir = tmp_path / "cache"
    first = CelebASource(str(tmp_path / "data"), split="all", image_size=16, cache_dir=str(cache_dir)).load().values
    (manifest,) = entries(cache_dir)
    (stored,) = cache_dir.glob("*.values.npy")
    assert np.load(stored, allow_pickle=False).dtype == np.uint8
    assert json.loads(manifest.read_text())["arrays"]["values"]["shape"] == [9, 3, 16, 16]
    for jpeg in (tmp_path / "data" / "celeba" / "img_align_celeba").glob("*.jpg"):
        garble_in_place(jpeg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a decode attempt would warn "skipping ... not a readable image"
        again = CelebASource(str(tmp_path / "data"), split="all", image_size=16, cache_dir=str(cache_dir)).load()
    assert torch.equal(again.values, first)
    assert mapped_from(again.values) == stored.resolve()  # the cache file's pages, not a copy in memory


def mapped_from(tensor: torch.Tensor) -> Path | None:
    """The file whose memory mapping holds ``tensor``'s data, read from /proc/self/maps (Linux)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps")
    address = tensor.data_ptr()
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(a, 16) for a in fields[0].split("-"))
        if start <= address < end:
            return Path(fields[5]) if len(fields) == 6 and fields[5].startswith("/") else None
    return None


def test_a_changed_source_file_is_rebuilt_and_another_subset_or_size_is_another_entry(tmp_path, caplog):
    write_celeba(tmp_path / "data")
    cache_dir = str(tmp_path / "cache")

    def load(**settings):
        return CelebASource(str(tmp_path / "data"), split="all", cache_dir=cache_dir, **settings).load().values

    first = load(image_size=16)
    changed = tmp_path / "data" / "celeba" / "img_align_celeba" / "000001.jpg"
    Image.fromarray(np.zeros((218, 178, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(0, changed.stat().st_mtime_ns + 10**9))  # a newer file, whatever the clock
    with caplog.at_level(logging.INFO, logger=cache.__name__):
        rebuilt = load(image_size=16)
    assert "rebuilding" in caplog.text
    assert rebuilt[0].max() < 10 and torch.equal(rebuilt[1:], first[1:])  # the new black image, not the cached one
    assert len(entries(Path(cache_dir))) == 1
    assert load(image_size=8).shape == (9, 3, 8, 8)
    assert load(image_size=16, n=4).shape == (4, 3, 16, 16)
    assert len(entries(Path(cache_dir))) == 3


def test_folder_images_and_masks_and_cifar_batches_come_from_the_cache(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(images / f"{name}.png")
        Image.fromarray(np.where(rng.random((20, 20)) < 0.5, 255, 0).astype(np.uint8)).save(masks / f"{name}.png")
    source = FolderSource(str(images), image_size=8, mask_root=str(masks), cache_dir=str(tmp_path / "cache"))
    first = source.load()
    for path in [*images.iterdir(), *masks.iterdir()]:
        garble_in_place(path)
    again = source.load()
    assert torch.equal(again.values, first.values) and torch.equal(again.observed, first.observed)
    assert again.observed.dtype == torch.bool and not bool(again.observed.all())

    write_cifar(tmp_path / "cifar")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test batches differ from the official md5
        cifar = Cifar10Source(str(tmp_path / "cifar"), n=10, cache_dir=str(tmp_path / "cache")).load().values
    for path in (tmp_path / "cifar").rglob("*_batch*"):
        garble_in_place(path)
    again = Cifar10Source(str(tmp_path / "cifar"), n=10, cache_dir=str(tmp_path / "cache")).load().values
    assert torch.equal(again, cifar)


def test_an_unwritable_or_full_cache_dir_costs_the_cache_not_the_run(tmp_path, caplog, monkeypatch):
    write_celeba(tmp_path / "data")
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        values = CelebASource(str(tmp_path / "data"), split="all", image_size=16, cache_dir=str(blocked)).load().values
    assert values.shape == (9, 3, 16, 16)
    assert f"data.cache_dir {blocked} cannot be written" in caplog.text

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    caplog.clear()
    monkeypatch.setattr(cache.np, "save", disk_full)
    full = tmp_path / "full"
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        values = CelebASource(str(tmp_path / "data"), split="all", image_size=16, cache_dir=str(full)).load().values
    assert values.shape == (9, 3, 16, 16)
    assert "No space left on device" in caplog.text and "decoding without a cache" in caplog.text
    assert not list(full.glob("*.npy")) and not list(full.glob(".*tmp*")) and not entries(full)


BUILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from miri_lightning.data.sources import CelebASource
values = CelebASource(sys.argv[1], split="all", image_size=16, cache_dir=sys.argv[2]).load().values
print("loaded", tuple(values.shape), int(values.sum()))
"""


def test_processes_started_together_build_the_cache_once(tmp_path):
    write_celeba(tmp_path / "data", count=12)
    args = [sys.executable, "-c", BUILD, str(tmp_path / "data"), str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)]
    processes.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    text = "".join(outputs)
    assert text.count("decoded once into the cache") == 1 and text.count("memory-mapped from the cache") == 1
    assert len({line for line in text.splitlines() if line.startswith("loaded")}) == 1


@pytest.mark.parametrize("data", ["celeba", "cifar10", "folder"])
def test_the_data_groups_default_to_a_documented_cache_dir(data, tiny_config, tmp_path):
    cfg = tiny_config(f"data={data}")
    assert cfg.data.cache_dir == str(tmp_path / "cache")  # $MIRI_CACHE_DIR (conftest), else data/cache
