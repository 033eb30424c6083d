"""Export a round's imputed data set as a folder of PNGs and one .npz, with the masks."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from miri_lightning.data.store import decode
from miri_lightning.snapshots import load_snapshot, round_name, snapshot_files


def export_round(output_dir: str | Path, round_index: int | None = None, to: str | Path | None = None) -> Path:
    """Write ``imputed/NNNNN.png``, ``masks/NNNNN.png`` (white = observed) and
    ``round_XXX.npz`` (``imputed`` float32 N×C×H×W in [0, 1], ``observed`` bool) for round
    ``round_index`` (default: the last kept) into ``to`` (default: ``output_dir/export/round_XXX``)."""
    output_dir = Path(output_dir)
    kept = dict(snapshot_files(output_dir))
    round_index = max(kept) if round_index is None else int(round_index)
    if round_index not in kept:
        raise ValueError(f"round {round_index} has no snapshot in {output_dir}/imputed (kept: {sorted(kept)})")
    tensors = load_snapshot(kept[round_index])
    imputed, observed = decode(tensors["imputed"]), tensors["observed"]
    if imputed.dim() != 4:
        raise ValueError(f"{output_dir} imputed a table: its imputed.csv is the export (original units)")
    to = Path(to) if to is not None else output_dir / "export" / round_name(round_index)
    (to / "imputed").mkdir(parents=True, exist_ok=True)
    (to / "masks").mkdir(parents=True, exist_ok=True)
    levels = (imputed * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    masks = (observed.all(1).numpy() * 255).astype(np.uint8)  # a pixel is white when all its channels are observed
    for i in range(levels.shape[0]):
        image = levels[i, ..., 0] if levels.shape[-1] == 1 else levels[i]
        Image.fromarray(image).save(to / "imputed" / f"{i:05d}.png")
        Image.fromarray(masks[i]).save(to / "masks" / f"{i:05d}.png")
    np.savez(to / f"{round_name(round_index)}.npz", imputed=imputed.numpy(), observed=observed.numpy())
    return to
