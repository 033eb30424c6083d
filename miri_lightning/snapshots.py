"""Files of a run written each round, atomically: the imputed data set
(``imputed/round_XXX.safetensors``) and the round's velocity field (``flows/round_XXX.safetensors``)."""

import hashlib
import json
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn


def snapshot_path(output_dir: str | Path, round_index: int) -> Path:
    return Path(output_dir) / "imputed" / f"round_{round_index:03d}.safetensors"


def save_atomically(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file to a temporary name, flush it to disk and rename it into
    place: a kill at any instant leaves no half-written file under ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates files readable by their owner only
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(
            f"could not write {path} ({error}); the earlier rounds' files and last.ckpt are intact: "
            "free space or fix output_dir, then resume with ckpt_path=last"
        ) from error
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_snapshot(output_dir: str | Path, round_index: int, imputed: Tensor, observed: Tensor) -> Path:
    """``imputed/round_XXX.safetensors``: tensors ``imputed`` (N, ...) and ``observed``."""
    return save_atomically(snapshot_path(output_dir, round_index), {"imputed": imputed, "observed": observed})


def flow_path(output_dir: str | Path, round_index: int) -> Path:
    return Path(output_dir) / "flows" / f"round_{round_index:03d}.safetensors"


def save_flow(output_dir: str | Path, round_index: int, velocity: nn.Module, net_config: dict) -> Path:
    """``flows/round_XXX.safetensors``: the velocity field that made round XXX (its weights,
    and its config as JSON metadata ``net``). Every round's flow is kept: imputing new items
    applies them all, in order (DESIGN.md §1)."""
    metadata = {"net": json.dumps(net_config), "round": str(round_index)}
    return save_atomically(flow_path(output_dir, round_index), velocity.state_dict(), metadata)


def load_flow(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """(state_dict, net config) of a saved flow, without pickle."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads(f.metadata()["net"])
        return load_file(str(path)), config
    except Exception as error:
        raise ValueError(f"{path} cannot be read as a MIRI flow ({error})") from error


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
