"""Throughput, FLOPs and memory of a MIRI recipe: the real Lightning loop that ``train.py``
runs (:func:`benchmark`), and a side loop of the bare training and ODE steps
(:func:`side_loop`, an upper bound on their throughput: no Lightning, no callbacks)."""

import copy
import resource
import statistics
import time
from collections.abc import Callable

import lightning as L
import torch
from omegaconf import DictConfig, open_dict
from torch.utils.flop_counter import FlopCounterMode

from miri_lightning import flow
from miri_lightning.data.datamodule import PairBatches
from miri_lightning.data.store import cache_interpolation, decode
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


class RoundClock(L.Callback):
    """Times one round of the real loop: the training steps after ``warmup`` (the device
    synchronised at the two ends only), the re-imputation pass of the MIRI callback, and the
    round's end (the rest: commit, snapshot, flow, metrics, checkpoint). With ``warm_ode``
    the callback's re-imputation runs once untimed first (compilation)."""

    def __init__(self, warmup: int, warm_ode: bool):
        self.warmup, self.warm_ode = warmup, warm_ode
        self.marks: dict[str, float] = {}
        self.reimpute_seconds: list[float] = []

    def _mark(self, name: str, device: torch.device) -> None:
        synchronize(device)
        self.marks[name] = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark("round_start", pl_module.device)
        # wrap the MIRI callback's re-imputation to time it
        callback = next(c for c in trainer.callbacks if hasattr(c, "reimpute"))
        plain = callback.reimpute

        def timed_reimpute(*args, **kwargs):
            synchronize(pl_module.device)
            started = time.perf_counter()
            result = plain(*args, **kwargs)
            synchronize(pl_module.device)
            self.reimpute_seconds.append(time.perf_counter() - started)
            return result

        callback.reimpute = timed_reimpute
        self._callback, self._store = callback, trainer.datamodule.store

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == self.warmup:
            self._mark("timed_start", pl_module.device)
        if batch_idx + 1 == trainer.num_training_batches:
            self._mark("training_end", pl_module.device)
            if self.warm_ode:
                store = self._store
                self._callback.reimpute(trainer, pl_module, store.imputed, store.observed, store.interp)
                self._mark("warm_ode_end", pl_module.device)

    def on_train_end(self, trainer, pl_module) -> None:
        self._mark("round_end", pl_module.device)


def benchmark(cfg: DictConfig, steps: int = 20, warmup: int = 5) -> dict:
    """One row of figures for the recipe ``cfg``, measured in the real loop: ``train.py``'s
    own run (:func:`~miri_lightning.run.build`: the trainer, every callback, logging, EMA,
    gradient clipping, checkpointing, the progress bar) fitted for one round of ``warmup`` +
    ``steps`` steps. Training images/s over the last ``steps`` steps; ODE image·steps/s of
    the MIRI callback's real re-imputation of the whole store (a warm pass when compiled);
    the round's wall-time split measured (training / re-imputation / round end) and
    estimated for the recipe's own ``miri.steps_per_round``; FLOPs per training image and
    per ODE step (torch's counter), achieved TFLOP/s and the fraction of the device's bf16
    peak where known."""
    if steps < 1 or warmup < 1:
        raise ValueError(f"benchmark.steps and benchmark.warmup must be at least 1, got {steps} and {warmup}")
    recipe_steps = int(cfg.miri.steps_per_round)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.miri.rounds, cfg.miri.steps_per_round = 1, warmup + steps
    run, _ = build(cfg)
    check_data(run)
    clock = RoundClock(warmup, warm_ode=bool(cfg.miri.compile))
    run.trainer.callbacks.insert(0, clock)  # before the MIRI callback: its hooks run first
    run.trainer.fit(run.module, datamodule=run.datamodule)
    marks, miri, store = clock.marks, cfg.miri, run.datamodule.store
    module = run.module
    device = module.device
    train_seconds = (marks["training_end"] - marks["timed_start"]) / steps
    reimpute_seconds = clock.reimpute_seconds[-1]
    evaluations = 2 if miri.solver == "heun" else 1
    ode_rate = len(store) * miri.ode_steps * evaluations / reimpute_seconds
    after_training = marks["round_end"] - marks.get("warm_ode_end", marks["training_end"])
    round_end_seconds = after_training - reimpute_seconds
    train_rate = miri.batch_size / train_seconds
    train_flops, ode_flops = count_flops(module, store, miri.batch_size, miri.impute_batch_size, device)
    precision = str(cfg.trainer.get("precision", "32-true"))
    peak = device_peak(device, precision)
    achieved = train_flops * train_rate
    recipe_training = recipe_steps * train_seconds
    return {
        **describe(cfg, module, device, precision),
        "items": len(store),
        "train_images_per_s": train_rate,
        "ode_image_steps_per_s": ode_rate,
        "measured_training_s": marks["training_end"] - marks["round_start"],
        "measured_reimpute_s": reimpute_seconds,
        "measured_round_end_s": round_end_seconds,
        "round_training_s": recipe_training,
        "round_reimpute_s": reimpute_seconds,
        "round_end_s": round_end_seconds,
        "round_seconds_estimate": recipe_training + reimpute_seconds + round_end_seconds,
        **work_and_memory(train_flops, ode_flops, achieved, peak, device),
    }


def describe(cfg: DictConfig, module, device: torch.device, precision: str) -> dict:
    """The first columns of a benchmark row: what was measured."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "parameters": sum(p.numel() for p in module.velocity.parameters()),
        "precision": precision,
        "compile": bool(cfg.miri.compile),
        "batch": cfg.miri.batch_size,
    }


def work_and_memory(train_flops: float, ode_flops: float, achieved: float, peak: float | None, device) -> dict:
    """The last columns of a benchmark row: FLOPs per image, achieved TFLOP/s, the fraction of
    the device's peak, peak memory."""
    return {
        "gflop_per_train_image": train_flops / 1e9,
        "gflop_per_ode_step": ode_flops / 1e9,
        "train_tflops": achieved / 1e12,
        "peak_fraction": achieved / peak if peak else None,
        "host_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "gpu_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def count_flops(module, store, batch_size: int, impute_batch_size: int, device: torch.device) -> tuple[float, float]:
    """FLOPs torch counts per training image (loss and backward of the uncompiled field, as
    the real step runs it: the source view's interpolation taken from the store) and per ODE
    image·step."""
    velocity = module.velocity.to(device)
    pairs = next(iter(PairBatches(store, batch_size, 1, seed=0)))
    source, observed, partner, _, *cached = (module.layout(x.to(device)) for x in pairs)
    t = torch.rand(source.shape[0], device=device)

    def train_step() -> None:
        flow.miri_loss(velocity, source, partner, observed, t, None, *cached).backward()

    n = min(impute_batch_size, len(store))
    x = module.layout(decode(store.imputed[:n]).to(device))
    o = module.layout(store.observed[:n].to(device))
    extra = {} if store.interp is None else {"source_interp": module.layout(store.interp[:n].to(device).float())}

    @torch.no_grad()
    def ode_step() -> None:
        velocity(x, x, o, torch.full((n,), 0.5, device=device), **extra)

    train = flops(train_step) / batch_size
    velocity.zero_grad(set_to_none=True)
    return train, flops(ode_step) / n


def side_loop(cfg: DictConfig, steps: int = 10, warmup: int = 3, repeats: int = 5) -> dict:
    """The bare hot loops outside Lightning, an upper bound on their throughput (the real
    loop is :func:`benchmark`): the recipe's model, data, batch sizes, ODE and precision
    settings, on the accelerator the trainer config names (``cuda`` when
    ``trainer.accelerator`` is gpu/cuda/auto and one is present). The training step is the
    loss, backward and Adam step (no EMA update, no logging, no callbacks); the round estimate
    adds the ODE pass over the whole store."""
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
    interpolate = getattr(module.velocity, "interpolate_items", None)
    cache_interpolation(store, interpolate if store.imputed.dim() == 4 else None, device)
    field = module._compiled if module._compiled is not None else module.velocity
    optimizer = module.configure_optimizers()
    batches = iter(PairBatches(store, miri.batch_size, 10**9, seed=0))
    generator = torch.Generator(device=device).manual_seed(0)

    def train_step() -> None:
        source, observed, partner, _, *cached = (module.layout(x.to(device, non_blocking=True)) for x in next(batches))
        t = torch.rand(source.shape[0], device=device, generator=generator)
        with autocast:
            loss = flow.miri_loss(field, source, partner, observed, t, None, *cached)
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
    extra = {} if store.interp is None else {"source_interp": module.layout(store.interp[:n].to(device))}

    @torch.no_grad()
    def ode_step() -> None:
        with autocast:
            field(x, x, o, t, **extra)

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
        **describe(cfg, module, device, precision),
        "train_images_per_s": train_rate,
        "ode_image_steps_per_s": ode_rate,
        "round_seconds_estimate": round_seconds,
        **work_and_memory(train_flops, ode_flops, achieved, peak, device),
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
