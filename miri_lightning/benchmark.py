"""Throughput, FLOPs and memory of a MIRI recipe's hot loops (training step, ODE step)."""

import resource
import statistics
import time
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from miri_lightning import flow
from miri_lightning.data.datamodule import PairBatches
from miri_lightning.data.store import decode
from miri_lightning.run import build, check_data

#: Dense bf16 tensor-core peaks (FLOP/s, fp32 accumulate) of the devices we know, by a name
#: fragment, most specific first.
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12}


def device_peak(device: torch.device, precision: str) -> float | None:
    """The device's bf16 peak when the run trains in bf16 on a known GPU, else None."""
    if device.type != "cuda" or "bf16" not in precision:
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in BF16_PEAK.items() if fragment in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall seconds of ``work`` over ``repeats`` runs, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        work()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def flops(work: Callable[[], None]) -> int:
    """FLOPs torch counts for one call of ``work`` (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()


def benchmark(cfg: DictConfig, steps: int = 10, warmup: int = 3, repeats: int = 5) -> dict:
    """One row of figures for the recipe ``cfg``: its model, data, batch sizes, ODE and
    precision settings, on the accelerator the trainer config names (``cuda`` when
    ``trainer.accelerator`` is gpu/cuda/auto and one is present). The training step is the
    loss, backward and Adam step (not the EMA update, not logging); the round estimate adds
    the ODE pass over the whole store."""
    run, _ = build(cfg)
    check_data(run)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    use_cuda = torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto")
    device = torch.device("cuda" if use_cuda else "cpu")
    precision = str(cfg.trainer.get("precision", "32-true"))
    half = torch.bfloat16 if "bf16" in precision else torch.float16
    autocast = torch.autocast(device.type, dtype=half, enabled="16" in precision)
    module, store, miri = run.module.to(device), run.datamodule.store, cfg.miri
    if miri.store_on_device:
        store.to(device)
    module.setup("fit")
    module.train()
    field = module._compiled if module._compiled is not None else module.velocity
    optimizer = module.configure_optimizers()
    batches = iter(PairBatches(store, miri.batch_size, 10**9, seed=0))
    generator = torch.Generator(device=device).manual_seed(0)

    def train_step() -> None:
        source, observed, partner, _ = (module.layout(x.to(device, non_blocking=True)) for x in next(batches))
        t = torch.rand(source.shape[0], device=device, generator=generator)
        with autocast:
            loss = flow.miri_loss(field, source, partner, observed, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def train_steps() -> None:
        for _ in range(steps):
            train_step()

    n = min(miri.impute_batch_size, len(store))
    x = module.layout(decode(store.imputed[:n]).to(device))
    o = module.layout(store.observed[:n].to(device))
    t = torch.full((n,), 0.5, device=device)

    @torch.no_grad()
    def ode_step() -> None:
        with autocast:
            field(x, x, o, t)

    train_seconds = timed(train_steps, device, warmup, repeats) / steps
    ode_seconds = timed(ode_step, device, warmup, repeats)
    train_flops = flops(train_step) / miri.batch_size
    ode_flops = flops(ode_step) / n
    train_rate = miri.batch_size / train_seconds
    ode_rate = n / ode_seconds
    evaluations = 2 if miri.solver == "heun" else 1
    round_seconds = miri.steps_per_round * train_seconds + len(store) * miri.ode_steps * evaluations / ode_rate
    peak = device_peak(device, precision)
    achieved = train_flops * train_rate
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "parameters": sum(p.numel() for p in module.velocity.parameters()),
        "precision": precision,
        "compile": bool(miri.compile),
        "batch": miri.batch_size,
        "train_images_per_s": train_rate,
        "ode_image_steps_per_s": ode_rate,
        "round_seconds_estimate": round_seconds,
        "gflop_per_train_image": train_flops / 1e9,
        "gflop_per_ode_step": ode_flops / 1e9,
        "train_tflops": achieved / 1e12,
        "peak_fraction": achieved / peak if peak else None,
        "host_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "gpu_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def race(name: str, history: list[dict], started: float) -> list[tuple[float, float]]:
    """(elapsed seconds since ``started``, PSNR on missing entries) after each round of a
    run's history (round 0: the initial fill, once the data are loaded)."""
    if not history or "psnr_missing" not in history[0]:
        raise ValueError(f"recipe {name} has no PSNR per round: the race needs data with ground truth")
    return [(record["clock"] - started, record["psnr_missing"]) for record in history]


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """The elapsed time of the first round whose PSNR is at least ``target`` (None: never)."""
    return next((elapsed for elapsed, psnr in curve if psnr >= target), None)
