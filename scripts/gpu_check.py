"""The GPU check: ``python scripts/gpu_check.py`` (or ``scripts/gpu_check.sh``, which adds the
benchmark). About 5 minutes on one H100/H200; prints every figure and ends with PASS or FAIL.

A tiny run (CIFAR-shaped crops of the embedded data) with bf16, compile, channels-last,
``store_on_device`` and the cached interpolation inputs, three times:
  A  in this process, uninterrupted: the store (and its interpolation cache) is on the GPU,
     bf16 autocast really ran (the U-Net's first convolution computes in bfloat16);
  B  the same in fp32 without compile: close to A, but not identical (bf16 was on);
  C  train.py in a subprocess, SIGKILLed in round 2 and resumed with ckpt_path=last: it ends
     close to A (bit for bit where the GPU kernels are deterministic).
Then: observed entries of every snapshot equal the data bit for bit; last.ckpt and every
round's flow load on the CPU, without ``_orig_mod.`` (compile) prefixes, and the flow
imputes on the CPU.

``MIRI_GPU_CHECK_CPU=1`` runs it all on the CPU (a dry run of the script itself: bf16 autocast
on the CPU; ``MIRI_GPU_CHECK_COMPILE=0`` also leaves compile out, which takes minutes there;
``MIRI_GPU_CHECK_STEPS``: steps per round, 60 by default).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from miri_lightning import CONFIG_DIR  # noqa: E402
from miri_lightning.data.store import decode  # noqa: E402
from miri_lightning.inference import RunFlows  # noqa: E402
from miri_lightning.module import MIRIModule  # noqa: E402
from miri_lightning.run import train  # noqa: E402
from miri_lightning.snapshots import load_flow, snapshot_files  # noqa: E402

ON_CPU = os.environ.get("MIRI_GPU_CHECK_CPU") == "1"
COMPILE = os.environ.get("MIRI_GPU_CHECK_COMPILE", "1") == "1"
WORK = Path(os.environ.get("MIRI_GPU_CHECK_DIR", ROOT / "checkpoints" / "gpu_check"))
ROUNDS = 3

#: The tiny run: 250 items, so that the last ODE batch (of 100) is padded.
#: On the CPU (the dry run) a tinier one: 100 items of 16x16, a tiny U-Net, ODE batches of 40.
SIZE = (
    ["data.n=100", "data.image_size=16", "model=unet_tiny", "miri.batch_size=16", "miri.impute_batch_size=40"]
    if ON_CPU
    else ["data.n=250", "model=unet_small", "miri.batch_size=64", "miri.impute_batch_size=100"]
)
RUN = [
    "data=sample",
    *SIZE,
    "model.interp_inputs=biharmonic",
    "model.interp_skip=true",
    f"miri.rounds={ROUNDS}",
    f"miri.steps_per_round={os.environ.get('MIRI_GPU_CHECK_STEPS', '60')}",
    "miri.ode_steps=4",
    "miri.solver=heun",
    "miri.ema=0.99",
    "miri.init=biharmonic",
    "miri.init_noise=0.03",
    "miri.channels_last=true",
    "miri.store_on_device=true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=10",
    "overwrite=true",
    "trainer=cpu" if ON_CPU else "trainer=gpu",
]
FAST = ["trainer.precision=bf16-mixed", f"miri.compile={str(COMPILE).lower()}"]
FP32 = ["trainer.precision=32-true", "miri.compile=false"]

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
    if not ok:
        failures.append(what)


def config(name: str, extra: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*RUN, *extra, f"output_dir={WORK / name}"])


def snapshot(name: str, round_index: int) -> dict:
    return load_file(WORK / name / "imputed" / f"round_{round_index:03d}.safetensors")


def run_a_and_b() -> torch.Tensor:
    """Runs A (bf16, compile, store on the device) and B (fp32); returns the data (truth)."""
    dtypes = []
    started = time.perf_counter()
    cfg = config("A", FAST)

    class Precision(L.Callback):  # the dtype the U-Net's first convolution computes in, in training
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if not dtypes:
                conv = module.velocity.unet.conv_in
                x = torch.rand(1, conv.in_channels, 8, 8, device=module.device)
                with torch.no_grad(), trainer.precision_plugin.forward_context():
                    dtypes.append(conv(x).dtype)

    a = train(cfg, check=lambda run: run.trainer.callbacks.append(Precision()))
    print(f"A (bf16, compile={COMPILE}): {time.perf_counter() - started:.1f} s for {ROUNDS} rounds", flush=True)
    store = a.datamodule.store
    expected = "cpu" if ON_CPU else "cuda"
    check(store.imputed.device.type == expected, f"the store is on the {expected}: {store.imputed.device}")
    check(
        store.interp is not None and store.interp.device.type == expected,
        f"its interpolation cache too: {None if store.interp is None else store.interp.device}",
    )
    check(torch.bfloat16 in dtypes, f"bf16 autocast was on: the first convolution computed in {set(dtypes)}")
    truth = decode(store.truth).cpu()
    started = time.perf_counter()
    train(config("B", FP32))
    print(f"B (fp32, no compile): {time.perf_counter() - started:.1f} s", flush=True)
    fast, full = snapshot("A", ROUNDS), snapshot("B", ROUNDS)
    missing = ~fast["observed"]
    gap = (fast["imputed"] - full["imputed"])[missing].abs()
    moved = (fast["imputed"] - snapshot("A", 1)["imputed"])[missing].abs().mean().item()
    print(
        f"bf16 vs fp32 after round {ROUNDS}: mean |difference| on missing entries {gap.mean():.2e}, max {gap.max():.2e}"
    )
    check(0 < gap.mean().item() < 0.02, "bf16 results are close to fp32 but not identical")
    print(f"(rounds 2-{ROUNDS} moved the imputation by {moved:.2e} on average)")
    return truth


def launch(name: str, *extra: str) -> subprocess.Popen:
    overrides = [*RUN, *FAST, f"output_dir={WORK / name}", *extra]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run_c() -> None:
    """C: killed in round 2, resumed; ends close to A."""
    started = time.perf_counter()
    killed = launch("C")
    seen = []
    for line in killed.stdout:
        seen.append(line)
        if re.search(r"round 2: training", line):
            time.sleep(2.0)
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait(60)
    check(killed.returncode == -signal.SIGKILL, f"C was killed in round 2 (exit {killed.returncode})")
    if killed.returncode != -signal.SIGKILL:
        print("".join(seen[-30:]))
        return
    resumed = launch("C", "ckpt_path=last", "overwrite=false")
    out, _ = resumed.communicate(timeout=600)
    check(resumed.returncode == 0 and "resumed" in out, "C resumed with ckpt_path=last and finished")
    if resumed.returncode != 0:
        print(out[-3000:])
        return
    print(f"C (killed and resumed): {time.perf_counter() - started:.1f} s", flush=True)
    a, c = snapshot("A", ROUNDS)["imputed"], snapshot("C", ROUNDS)["imputed"]
    gap = (a - c).abs()
    print(
        f"resumed vs uninterrupted after round {ROUNDS}: identical {torch.equal(a, c)}, "
        f"max |difference| {gap.max():.2e}"
    )
    check(gap.mean().item() < 0.01, "the resumed run ends close to the uninterrupted one")


def check_files(truth: torch.Tensor) -> None:
    for name in ("A", "B", "C"):
        for _, path in snapshot_files(WORK / name):
            tensors = load_file(path)
            observed = tensors["observed"]
            exact = torch.equal(tensors["imputed"][observed], truth[observed])
            check(exact, f"{name}/{path.name}: observed entries equal the data bit for bit")
    checkpoint = torch.load(WORK / "A" / "last.ckpt", map_location="cpu", weights_only=True)
    keys = list(checkpoint["state_dict"])
    check(not any("_orig_mod" in k for k in keys), "last.ckpt has no _orig_mod. (compile) prefixes")
    module = MIRIModule(checkpoint["hyper_parameters"]["net"])
    module.load_state_dict(checkpoint["state_dict"])
    check(True, "last.ckpt loads into a CPU module, strictly")
    for path in sorted((WORK / "A" / "flows").glob("*.safetensors")):
        state, _ = load_flow(path)
        check(not any("_orig_mod" in k for k in state), f"flows/{path.name}: no compile prefixes")
    flows = RunFlows(WORK / "A", device="cpu")
    last = snapshot("A", ROUNDS)
    x, o = last["imputed"][:8], last["observed"][:8]
    y = flows.impute(truth[:8] * o, o, torch.Generator().manual_seed(0))
    check(y.shape == x.shape and bool(torch.isfinite(y).all()), "the run's flows impute on the CPU")
    check(torch.equal(y[o], truth[:8][o]), "and keep observed entries bit for bit")


def main() -> None:
    device = "cpu (dry run)" if ON_CPU else torch.cuda.get_device_name(0)
    print(f"GPU check on {device}, compile={COMPILE}, in {WORK}", flush=True)
    if not ON_CPU and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or MIRI_GPU_CHECK_CPU=1 for a dry run on the CPU")
    started = time.perf_counter()
    truth = run_a_and_b()
    run_c()
    check_files(truth)
    print(f"GPU check: {time.perf_counter() - started:.1f} s")
    print("FAIL: " + "; ".join(failures) if failures else "PASS")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
