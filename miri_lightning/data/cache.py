"""Decode once: a source's decoded images as raw uint8 ``.npy`` files in ``data.cache_dir``.

A cache entry is ``<stem>.<array>.npy`` (plain NumPy arrays, no pickle) and ``<stem>.json``, its
manifest (the key and the source fingerprint), written last: an entry without a manifest does not
exist. ``stem`` names the key (source, root, split, size, subset), so that a cache made for another
subset or size is another entry, never reused. The manifest's fingerprint (every source file's
name, size and modification time: a stat per file, no read) must match the source files now, or
the entry is rebuilt. One process per machine builds an entry (an exclusive ``fcntl.flock`` on
``<stem>.lock``, taken by every process, whatever launched it, before or after the process group
exists) while the others wait; then all memory-map it (copy-on-write: the pages of the page cache
are shared by every process of the machine, and no image file is opened). Files are written to a
temporary name and renamed into place. A cache_dir that cannot be written (read-only, full) costs
the cache, not the run: one warning, and the images are decoded in memory.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: Bumped when the decoding changes, so that old entries are rebuilt.
VERSION = 1


def fingerprint(files: list[Path]) -> str:
    """sha256 over each file's path, size and modification time (ns), in order: a stat per
    file, no read. A replaced, edited, added or removed file changes it; content rewritten in
    place with the same size and mtime does not (a content hash of 200k JPEGs would cost a full
    read of the data set per run, what the cache is there to avoid)."""
    digest = hashlib.sha256()
    for path in files:
        stat = Path(path).stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def entry_stem(key: dict) -> str:
    """The entry's file name stem: readable source and size, and a hash of the whole key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    size = key.get("image_size", "x")
    return f"{key['source']}-{key.get('split', 'all')}-{size}-n{key.get('n') or 'all'}-{digest}"


def cached_arrays(
    cache_dir: str | Path | None,
    key: dict,
    files: list[Path],
    decode: Callable[[], dict[str, Tensor]],
) -> dict[str, Tensor]:
    """The arrays ``decode()`` makes (name -> uint8 or bool tensor), from the cache entry of
    ``key`` when its fingerprint matches ``files``, else decoded now and written there.
    ``cache_dir`` None: no cache, decoded in memory."""
    if cache_dir is None:
        return decode()
    folder = Path(cache_dir).expanduser()
    key = {**key, "version": VERSION}
    stem = entry_stem(key)
    expected = {"key": key, "fingerprint": fingerprint(files)}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f"{stem}.lock", "a+b")  # noqa: SIM115 - held until the entry is settled
    except OSError as error:
        entry = _read_entry(folder, stem, expected)  # a read-only cache made elsewhere still serves
        if entry is not None:
            return entry
        log.warning(f"data.cache_dir {folder} cannot be written ({error}): decoding the images without a cache")
        return decode()
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other processes of this machine wait here while one builds
        entry = _read_entry(folder, stem, expected)
        if entry is not None:
            log.info(f"images memory-mapped from the cache {folder / stem}.*")
            return entry
        arrays = decode()
        try:
            _write_entry(folder, stem, expected, arrays)
        except OSError as error:
            log.warning(
                f"data.cache_dir {folder}: the cache could not be written ({error}); "
                "decoding without a cache, this run goes on with the images in memory"
            )
            return arrays
        log.info(f"images decoded once into the cache {folder / stem}.*")
        entry = _read_entry(folder, stem, expected)
    return entry if entry is not None else arrays


def _read_entry(folder: Path, stem: str, expected: dict) -> dict[str, Tensor] | None:
    """The entry's arrays, memory-mapped, if its manifest matches ``expected``; else None."""
    try:
        manifest = json.loads((folder / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expected.items()):
        if (folder / f"{stem}.json").exists():
            log.info(f"the cache {folder / stem}.* was made from other source files: rebuilding it")
        return None
    arrays = {}
    for name, spec in manifest.get("arrays", {}).items():
        try:
            array = np.load(folder / f"{stem}.{name}.npy", mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError):
            return None
        if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
            return None
        arrays[name] = torch.from_numpy(array)  # copy-on-write pages: shared until written
    return arrays or None


def _write_entry(folder: Path, stem: str, expected: dict, arrays: dict[str, Tensor]) -> None:
    """Write each array to a temporary name, fsync, rename; the manifest last."""
    (folder / f"{stem}.json").unlink(missing_ok=True)  # the old entry is gone before the new one is made
    specs = {}
    for name, tensor in arrays.items():
        array = tensor.numpy()
        _atomic(folder / f"{stem}.{name}.npy", lambda f, a=array: np.save(f, a, allow_pickle=False))
        specs[name] = {"shape": list(array.shape), "dtype": str(array.dtype)}
    manifest = json.dumps({**expected, "arrays": specs}, indent=1).encode()
    _atomic(folder / f"{stem}.json", lambda f: f.write(manifest))


def _atomic(path: Path, write: Callable) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
