"""Snapshots of the imputed data set: ``imputed/round_XXX.safetensors``, written atomically."""

import hashlib
import os
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor


def snapshot_path(output_dir: str | Path, round_index: int) -> Path:
    return Path(output_dir) / "imputed" / f"round_{round_index:03d}.safetensors"


def save_snapshot(output_dir: str | Path, round_index: int, imputed: Tensor, observed: Tensor) -> Path:
    """Write tensors ``imputed`` (N, ...) and ``observed`` to a temporary file, flush it to
    disk, and rename it into place: a kill at any instant leaves no half-written snapshot."""
    path = snapshot_path(output_dir, round_index)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"imputed": imputed.contiguous().cpu(), "observed": observed.contiguous().cpu()}, str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates files readable by their owner only
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(
            f"could not write the snapshot {path} ({error}); the earlier snapshots and last.ckpt are intact: "
            "free space or fix output_dir, then resume with ckpt_path=last"
        ) from error
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prune_snapshots(output_dir: str | Path, keep_after: int) -> list[Path]:
    """Delete the snapshots of rounds <= ``keep_after``; returns the deleted paths."""
    deleted = []
    for path in sorted((Path(output_dir) / "imputed").glob("round_*.safetensors")):
        digits = path.stem.removeprefix("round_")
        if digits.isdigit() and int(digits) <= keep_after:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted


def tensor_digest(tensor: Tensor) -> str:
    """sha256 of a tensor's bytes (dtype and shape not included)."""
    return hashlib.sha256(tensor.detach().contiguous().cpu().numpy()).hexdigest()


def load_snapshot(path: str | Path) -> dict[str, Tensor]:
    """Read a snapshot (safetensors: no pickle); a missing, truncated or foreign file gets a
    ValueError that names it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"snapshot {path} does not exist: the run directory is incomplete")
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ValueError(f"snapshot {path} cannot be read ({error}): it is truncated or not a snapshot") from error
    missing = {"imputed", "observed"} - tensors.keys()
    if missing:
        raise ValueError(f"snapshot {path} lacks the tensors {sorted(missing)}")
    return tensors
