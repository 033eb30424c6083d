"""Files of a run written each round, atomically: the imputed data set
(``imputed/round_XXX.safetensors``) and the round's velocity field (``flows/round_XXX.safetensors``);
and how every file of a round is named (``round_XXX``, :func:`round_name`) and read back
(:func:`round_number`, :func:`round_files`)."""

import hashlib
import json
import os
import re
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

#: The stem of a round's file: ``round_`` and the round's number (three digits or more).
ROUND_STEM = re.compile(r"round_([0-9]+)")


def round_name(round_index: int) -> str:
    """``round_XXX``: the stem of round ``round_index``'s files (snapshots, flows, checkpoints, exports)."""
    return f"round_{round_index:03d}"


def round_number(path: str | Path) -> int | None:
    """The round of a file or folder named ``round_XXX`` (with any suffix); None for another name."""
    match = ROUND_STEM.fullmatch(Path(path).stem)
    return int(match.group(1)) if match else None


def round_files(folder: str | Path, suffix: str) -> list[tuple[int, Path]]:
    """(round, path) of every ``round_XXX<suffix>`` file in ``folder``, by round (none: empty)."""
    found = ((round_number(path), path) for path in Path(folder).glob(f"round_*{suffix}"))
    return sorted((index, path) for index, path in found if index is not None)


def snapshot_path(output_dir: str | Path, round_index: int) -> Path:
    return Path(output_dir) / "imputed" / f"{round_name(round_index)}.safetensors"


def snapshot_files(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(round, path) of the run's kept snapshots, by round; a ValueError when there is none."""
    found = round_files(Path(output_dir) / "imputed", ".safetensors")
    if not found:
        raise ValueError(f"{output_dir} holds no imputed/round_XXX.safetensors: is it a run directory of train.py?")
    return found


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
    return Path(output_dir) / "flows" / f"{round_name(round_index)}.safetensors"


#: The version of the flow files this code writes; a file of a higher one is refused. 1: metadata
#: ``net`` held a Hydra ``_target_``; 2: ``net`` holds ``{"name": key of nets.NETS, ...}``,
#: ``format`` and ``fill_mean`` (the training set's observed channel means, for ``miri.init=mean``).
FLOW_FORMAT = 2


def save_flow(
    output_dir: str | Path,
    round_index: int,
    velocity: nn.Module,
    net_config: dict,
    fill_mean: list[float] | None = None,
) -> Path:
    """``flows/round_XXX.safetensors``: the velocity field that made round XXX (its weights,
    and as JSON metadata: ``net``, the network's key and arguments, ``format``, and
    ``fill_mean``, the training set's per-channel mean of observed entries (C,), from which
    new items get a ``miri.init=mean`` fill). Every round's flow is kept: imputing new items
    applies them all, in order (docs/algorithm.md)."""
    from miri_lightning.nets import net_spec

    metadata = {
        "format": str(FLOW_FORMAT),
        "net": json.dumps(net_spec(net_config, "model")),
        "round": str(round_index),
    }
    if fill_mean is not None:
        metadata["fill_mean"] = json.dumps([float(v) for v in fill_mean])
    return save_atomically(flow_path(output_dir, round_index), velocity.state_dict(), metadata)


def read_flow_metadata(path: str | Path) -> dict:
    """The metadata of a flow file, checked: a file of a newer format, or whose ``net`` is not
    one of the project's networks (``nets.NETS``), is a ValueError that names it. ``net`` comes
    back as ``{"name": key, ...}`` (format-1 files' ``_target_`` mapped to its key), ``format``
    as an int, ``fill_mean`` as a list or None."""
    from miri_lightning.nets import net_spec

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        version = int(metadata.get("format", "1"))
        net = json.loads(metadata["net"])
        fill_mean = json.loads(metadata["fill_mean"]) if "fill_mean" in metadata else None
    except Exception as error:
        raise ValueError(f"{path} cannot be read as a MIRI flow ({error})") from error
    if version > FLOW_FORMAT:
        raise ValueError(
            f"{path} is a flow of format {version}, written by a newer miri_lightning (this one reads up to "
            f"{FLOW_FORMAT}): upgrade miri_lightning to use this run"
        )
    if not isinstance(net, dict):
        raise ValueError(f"{path} cannot be read as a MIRI flow (its metadata net is not a mapping)")
    return {"format": version, "net": net_spec(net, str(path)), "fill_mean": fill_mean}


def load_flow(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """(state_dict, net spec ``{"name": key, ...}``) of a saved flow, without pickle and
    without building anything the file names (see :func:`read_flow_metadata`)."""
    config = read_flow_metadata(path)["net"]
    try:
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
    for index, path in round_files(Path(output_dir) / "imputed", ".safetensors"):
        if index <= keep_after:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted


def tensor_digest(tensor: Tensor, rows: int = 4096) -> str:
    """sha256 of a tensor's bytes (dtype and shape not included), streamed over ``rows`` rows
    at a time (the same digest as of the whole, with no copy of the whole off an accelerator)."""
    digest = hashlib.sha256()
    tensor = tensor.detach()
    if tensor.dim() == 0:
        tensor = tensor.reshape(1)
    for k in range(0, tensor.shape[0], rows):
        digest.update(tensor[k : k + rows].contiguous().cpu().numpy())
    return digest.hexdigest()


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
