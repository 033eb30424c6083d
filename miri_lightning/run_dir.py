"""The rules of a run directory (``output_dir``): which checkpoint a run starts from, what a
new run deletes, which checkpoints and folders are refused, and how a run's ``config.yaml`` is
read back (as data: no interpolation, no YAML alias)."""

import os
import shutil
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from miri_lightning import ranks
from miri_lightning.snapshots import round_files

#: What a run (or a saved imputer) writes to its directory: a folder holding any of them holds a run.
RUN_FILES = ("last.ckpt", "config.yaml", "flows", "imputed", "imputer.json")

#: The largest config.yaml read back from a run directory (a run's own is a few kB).
MAX_CONFIG_BYTES = 1 << 20


def config_rank(cfg: DictConfig) -> int:
    """This process's global rank, from the launcher's environment (no Trainer yet)."""
    return ranks.global_rank(cfg.trainer.get("num_nodes", 1), cfg.trainer.get("devices", 1))


def holds_run(output_dir: Path) -> str | None:
    """The name of the first of :data:`RUN_FILES` (or a ``round_*.ckpt``) in ``output_dir``, or None."""
    output_dir = Path(output_dir)
    for name in RUN_FILES:
        if (output_dir / name).exists():
            return name
    found = next(output_dir.glob("round_*.ckpt"), None) if output_dir.is_dir() else None
    return None if found is None else found.name


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> tuple[str | None, bool]:
    """(the checkpoint to resume, whether ``output_dir``'s earlier run is to be deleted) for
    ``ckpt_path``: null (new run), ``last`` (resume ``output_dir``), ``auto`` (resume it if it
    holds a run, else start it) or a file. Nothing is deleted here: the caller deletes once
    every other setting has been checked, so that a bad setting never costs the earlier run."""
    ckpt = cfg.ckpt_path
    last = output_dir / "last.ckpt"
    if ckpt == "auto" or (ckpt is None and not cfg.overwrite):
        refuse_mid_round_checkpoints(output_dir)
    if ckpt == "auto":
        if cfg.overwrite:
            raise ValueError(
                "ckpt_path=auto resumes the run in output_dir and overwrite=true would delete it: pass only one"
            )
        if last.exists():
            return str(last), False
        rounds = round_files(output_dir, ".ckpt")
        if rounds:  # killed between a round's checkpoint and last.ckpt
            return str(rounds[-1][1]), False
        # nothing to resume: what a run killed before its first completed round left (its
        # TensorBoard events, config) goes, so that the new start logs no duplicate points
        return None, config_rank(cfg) == 0
    if ckpt is None:
        if last.exists():
            if not cfg.overwrite:
                raise ValueError(
                    f"output_dir {output_dir} already holds a run ({last.name}): resume it with ckpt_path=last "
                    "(or ckpt_path=auto), pick another run_name, or pass overwrite=true to delete it"
                )
            return None, config_rank(cfg) == 0  # every process of a DDP run builds the run: one deletes
        return None, False
    if ckpt == "last":
        if not last.exists():
            raise ValueError(f"ckpt_path=last, but {last} does not exist: there is no run to resume in output_dir")
        ckpt = last
    return str(ckpt), False


def refuse_mid_round_checkpoints(output_dir: Path) -> None:
    """Under SLURM, Lightning resumes a run started without ``ckpt_path`` from the newest
    ``hpc_ckpt_*.ckpt`` (its auto-requeue checkpoint, taken mid-round), where a MIRI round
    cannot continue. This framework turns that checkpoint off; one left by other code is refused."""
    mid_round = sorted(output_dir.glob("hpc_ckpt_*.ckpt"))
    if mid_round:
        raise ValueError(
            f"output_dir {output_dir} holds {mid_round[0].name}, a mid-round checkpoint of Lightning's SLURM "
            "auto-requeue, from which a MIRI round cannot continue: delete it (a resume starts from the last "
            "completed round)"
        )


def remove_run(output_dir: Path) -> None:
    """Delete what a run wrote (``overwrite=true``), leaving Hydra's own files to Hydra."""
    for pattern in ("*.ckpt", "config.yaml", "imputed.csv", "quality.csv", "quality.md", "metrics.csv", "metrics.md"):
        for path in output_dir.glob(pattern):
            path.unlink()
    for folder in ("imputed", "flows", "tensorboard", "export"):
        shutil.rmtree(output_dir / folder, ignore_errors=True)


def check_checkpoint(path: Path) -> dict:
    """Load a checkpoint without arbitrary pickle and check that it is one of ours (with the
    ``global_step`` a resume starts its TensorBoard log from)."""
    from miri_lightning.data.datamodule import MIRIDataModule

    if not path.is_file():
        raise ValueError(f"ckpt_path={path} is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(error).__name__}): it is truncated, altered, or holds "
            "objects other than tensors and plain values; resume from another round_*.ckpt of the run"
        ) from error
    if (
        not isinstance(checkpoint, dict)
        or MIRIDataModule.__qualname__ not in checkpoint
        or "net" not in checkpoint.get("hyper_parameters", {})
    ):
        raise ValueError(f"checkpoint {path} is not a miri_lightning training checkpoint")
    step = checkpoint.get("global_step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(
            f"checkpoint {path} holds no global_step (a training step count): it was not written by Lightning's "
            "Trainer; resume from another round_*.ckpt of the run"
        )
    return checkpoint


def check_writable(output_dir: Path) -> None:
    """Fail before any work if ``output_dir`` cannot be created or written."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"output_dir {output_dir} is not writable ({error}): choose another output_dir") from error


def _interpolation(node, where: str = "") -> str | None:
    """The dotted key of the first string in ``node`` (plain dicts and lists) that OmegaConf
    would resolve (``${...}``), or None."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return where if isinstance(node, str) and "${" in node else None
    for key, value in items:
        found = _interpolation(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def load_run_config(path: Path) -> tuple[DictConfig, str]:
    """(config, its text) of a run directory's ``config.yaml``, read as data. A run writes it
    resolved (``OmegaConf.save(resolve=True)``), so a file holding a YAML anchor or alias (an
    alias bomb expands exponentially) or an interpolation (``${oc.env:...}`` would read the
    environment) was not written by a run: a ValueError naming the file and key, never the value."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: is {path.parent} a run directory of train.py?")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is over {MAX_CONFIG_BYTES >> 20} MiB: not the config.yaml of a run")
    text = path.read_text()
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # events: linear in the text, nothing expanded
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                line = event.start_mark.line + 1
                raise ValueError(
                    f"{path} uses a YAML anchor or alias (line {line}), which a run's config.yaml never holds: refused"
                )
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path} is not valid YAML{where}: is it the config.yaml of a run?") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a mapping: is it the config.yaml of a run?")
    key = _interpolation(data)
    if key is not None:
        raise ValueError(
            f"{path} holds an interpolation (${{...}}) at {key}, which a run's config.yaml never holds "
            "(it is saved resolved): refused, nothing was resolved"
        )
    return OmegaConf.create(text), text
