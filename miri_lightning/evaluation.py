"""Evaluate a finished run: MIRI's snapshots and the baselines, on the same data and masks."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch import Tensor

from miri_lightning.data import sources
from miri_lightning.data.store import decode
from miri_lightning.fid import Features, inception_features
from miri_lightning.run_dir import load_run_config
from miri_lightning.scoring import baseline_rows, check_baselines, markdown, scores, write_table
from miri_lightning.snapshots import snapshot_files

COLUMNS = (
    "method",
    "round",
    "fid",
    "psnr_missing",
    "psnr_full",
    "ssim",
    "ssim_missing",
    "rmse_missing",
    "mae_missing",
    "mmd",
    "swd",
    "seconds",
)
HEADERS = {
    "method": "method",
    "round": "round",
    "fid": "FID",
    "psnr_missing": "PSNR missing (dB)",
    "psnr_full": "PSNR (dB)",
    "ssim": "SSIM",
    "ssim_missing": "SSIM missing",
    "rmse_missing": "RMSE missing",
    "mae_missing": "MAE missing",
    "mmd": "MMD²",
    "swd": "SWD",
    "seconds": "seconds",
}


#: The data sources a run's config.yaml may name (its ``data._target_``): nothing else is built.
SOURCES = ("SampleSource", "Cifar10Source", "FolderSource", "CelebASource", "ArraySource", "CsvSource", "ToySource")


def data_source(data_cfg: dict, config: Path):
    """The project's data source that ``data_cfg`` (read from ``config``) names, built from its
    plain arguments (never Hydra's instantiate: a run directory is not code to run)."""
    target = str(data_cfg.pop("_target_", ""))
    module, _, name = target.rpartition(".")
    if module != sources.__name__ or name not in SOURCES:
        raise ValueError(f"{config} names the data source {target!r}, which is not one of miri_lightning's: refused")
    try:
        return getattr(sources, name)(**data_cfg)
    except TypeError as error:
        raise ValueError(f"{config}: data.* does not fit {name} ({error})") from error


def load_truth(output_dir: Path) -> Tensor:
    """The complete images of the run, rebuilt from its config.yaml."""
    config = output_dir / "config.yaml"
    run_cfg, _ = load_run_config(config)  # as data: no interpolation, no YAML alias
    if not isinstance(run_cfg.get("data"), DictConfig):
        raise ValueError(f"{config} holds no data settings: is {output_dir} a run directory of train.py?")
    data_cfg = OmegaConf.to_container(run_cfg.data)
    data_cfg.pop("store_dtype", None)
    loaded = data_source(data_cfg, config).load()
    if not loaded.has_truth:
        raise ValueError(f"the data of {output_dir} come without ground truth: there is nothing to evaluate against")
    return decode(loaded.values)


def evaluate(
    output_dir: str | Path,
    per_round: bool = False,
    baselines: tuple[str, ...] = ("mean", "nearest", "biharmonic"),
    mmd_items: int = 1000,
    fid_weights: str | None = None,
    features: Features | None = None,
    say=print,
) -> list[dict]:
    """Rows of the table: MIRI at the last round (every kept round with ``per_round``), then
    each baseline on the same masks. ``features``: the FID feature network (default:
    torch-fidelity's Inception; FID is skipped with one line when its weights are absent)."""
    output_dir = Path(output_dir)
    check_baselines(baselines)
    chosen = snapshot_files(output_dir)
    chosen = chosen if per_round else chosen[-1:]
    truth = load_truth(output_dir)
    if truth.dim() != 4:
        raise ValueError(f"{output_dir} imputed vectors: its round lines and round/* scalars hold RMSE, MAE and MMD")
    if features is None:
        try:
            features = inception_features(fid_weights)
        except FileNotFoundError as error:
            say(f"FID skipped: {error}")
    rows, observed = [], None
    for round_index, path in chosen:
        snapshot = load_file(path)
        imputed, observed = decode(snapshot["imputed"]), snapshot["observed"]
        # observed entries hold the data (to within a float16 store's rounding, below an 8-bit level)
        if imputed.shape != truth.shape or (imputed - truth)[observed].abs().max() > 0.5 / 255:
            raise ValueError(f"{path} does not hold the data of this run's config.yaml")
        miri = scores(imputed, truth, observed, COLUMNS, mmd_items, features)
        rows.append({"method": "miri", "round": round_index, **miri})
    for row in baseline_rows(truth, observed, baselines, names=COLUMNS, mmd_items=mmd_items, features=features):
        rows.append({"method": row["method"], "round": None, **row})
    return rows


def table(rows: list[dict]) -> str:
    """The evaluation table in markdown (:data:`COLUMNS`, headed by :data:`HEADERS`)."""
    return markdown(rows, COLUMNS, HEADERS)


def write_tables(rows: list[dict], output_dir: str | Path) -> tuple[Path, Path]:
    """``metrics.csv`` and ``metrics.md`` in the run directory, and the table as TensorBoard
    text ``evaluation/table``."""
    output_dir = Path(output_dir)
    csv_path, md_path = output_dir / "metrics.csv", output_dir / "metrics.md"
    text = table(rows)
    write_table(rows, COLUMNS, csv_path, text)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(output_dir / "tensorboard")) as writer:
        writer.add_text("evaluation/table", text)
    return csv_path, md_path
