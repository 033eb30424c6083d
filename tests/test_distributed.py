"""Several processes, whatever starts them: the global batch divides over the ranks, each
rank logs to its own file, and ``ckpt_path=auto`` starts a run or resumes a killed one.

The launchers are the real ones or their environment: Lightning's own (``trainer=ddp_cpu``
from one process), torchrun's (RANK, LOCAL_RANK, WORLD_SIZE, ... set for each of two
processes started here, which Lightning's TorchElasticEnvironment detects) and srun's
(SLURM_PROCID, SLURM_NTASKS, ...: Lightning's SLURMEnvironment)."""

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from lightning.fabric.plugins.environments import SLURMEnvironment
from safetensors.torch import load_file

from miri_lightning.data.datamodule import RECORD_PAIRS_ENV
from miri_lightning.ranks import global_rank, log_name
from miri_lightning.run import build, train

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30

#: One tiny run, two rounds; every launch below is this command (plus the launcher's settings).
COMMAND = [
    "data.n=48",
    "data.image_size=16",
    "model=unet_tiny",
    "miri.batch_size=16",
    "miri.impute_batch_size=16",
    "miri.rounds=2",
    f"miri.steps_per_round={STEPS}",
    "miri.ode_steps=3",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "ckpt_path=auto",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun sets for process ``rank`` of ``world`` on one node."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "GROUP_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCHELASTIC_RUN_ID": "test",
    }


def srun_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What srun sets for task ``rank`` of ``world`` on one node (and the port to meet on)."""
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "miri",
        "SLURM_NTASKS": str(world),
        "SLURM_NTASKS_PER_NODE": str(world),
        "SLURM_NNODES": "1",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_NODEID": "0",
        "MASTER_PORT": str(port),
    }


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return {**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def start(out: Path, env: dict[str, str], *overrides: str, new_session: bool = False) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    console = open(out / f"console_{env.get('RANK', env.get('SLURM_PROCID', 'main'))}.txt", "a")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "train.py", *COMMAND, f"output_dir={out}", *overrides],
        cwd=ROOT,
        stdout=console,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=new_session,
    )


def wait_for(predicate, what: str, processes=(), timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for process in processes:
            assert process.poll() is None, f"a process ended (code {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def finish(processes, out: Path, timeout: float = 600) -> None:
    for process in processes:
        process.wait(timeout)
    consoles = "\n".join(p.read_text() for p in sorted(out.glob("console_*.txt")))
    assert all(p.returncode == 0 for p in processes), consoles


def run_ranks(out: Path, launcher, *overrides: str, extra_env=None, rank_one_first: bool = False):
    """Start the two processes of a 2-rank run as ``launcher`` would; with
    ``rank_one_first``, rank 0 only once rank 1 has opened its log (Hydra has then written
    whatever rank 1 writes before training). Returns the processes."""
    port = free_port()
    envs = [base_env(**launcher(rank, 2, port), **(extra_env or {})) for rank in (0, 1)]
    if not rank_one_first:
        return [start(out, envs[rank], *overrides) for rank in (0, 1)]
    one = start(out, envs[1], *overrides)
    wait_for(lambda: (out / "train_rank1.log").exists(), "rank 1's log", [one])
    hydra_before_rank_zero = (out / ".hydra").exists()
    zero = start(out, envs[0], *overrides)
    return [zero, one], hydra_before_rank_zero


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    """The uninterrupted 2-rank run, started torchrun's way (rank 1 first), recording its pairs."""
    out = tmp_path_factory.mktemp("torchrun") / "run"
    pairs = out.parent / "pairs"
    pairs.mkdir()
    # hydra.verbose: the callback's DEBUG line with each rank's store hash (off by default)
    verbose = "hydra.verbose=miri_lightning.callbacks.miri"
    processes, hydra_before_rank_zero = run_ranks(
        out, torchrun_env, "trainer=ddp_cpu", verbose, extra_env={RECORD_PAIRS_ENV: str(pairs)}, rank_one_first=True
    )
    finish(processes, out)
    return out, pairs, hydra_before_rank_zero


def test_under_torchrun_each_rank_logs_to_its_file_and_only_rank_zero_writes_the_rest(torchrun_run):
    out, _, hydra_before_rank_zero = torchrun_run
    # rank 1 ran Hydra's main first and wrote no .hydra/; rank 0 did
    assert not hydra_before_rank_zero
    assert sorted(p.name for p in (out / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert sorted(p.name for p in out.glob("*.log")) == ["train_rank0.log", "train_rank1.log"]
    for rank in (0, 1):
        text = (out / f"train_rank{rank}.log").read_text()
        assert re.search(rf"round 1: rank {rank} re-imputing", text)
        assert not re.search(rf"rank {1 - rank} re-imputing", text)
    assert "miri.batch_size 16 pairs per step: 2 rank(s) x 8 pairs" in (out / "train_rank0.log").read_text()
    assert (out / "config.yaml").exists()
    # TensorBoard: one writer (rank 0), one events file
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1


def check_shards_and_stores(out: Path, n: int) -> None:
    """A 2-rank run of ``n`` items in ``out``, logged with ``hydra.verbose`` on the callback:
    in rounds 1 and 2 each item was re-imputed by exactly one rank (balanced shards), both
    ranks then held the same store, the round's snapshot, and the machine had one store."""
    logs = {rank: (out / f"train_rank{rank}.log").read_text() for rank in (0, 1)}
    for round_index in (1, 2):
        shards, digests = [], {}
        for rank, text in logs.items():
            (start, stop, items), *more = re.findall(
                rf"round {round_index}: rank {rank} re-imputing items \[(\d+), (\d+)\) of (\d+)", text
            )
            assert not more and int(items) == n
            shards.append(range(int(start), int(stop)))
            (digests[rank],) = re.findall(rf"round {round_index}: rank {rank} holds the store sha256 (\w+)", text)
        assert sorted(i for shard in shards for i in shard) == list(range(n))
        assert sorted(len(shard) for shard in shards) == [n // 2, n - n // 2]  # balanced
        snapshot = load_file(out / "imputed" / f"round_{round_index:03d}.safetensors")
        assert digests[0] == digests[1] == hashlib.sha256(snapshot["imputed"].numpy()).hexdigest()
    # one store per machine: built by one rank in shared memory, mapped by the other
    assert "rank 0 built the store once for this machine in shared memory" in logs[0]
    assert "rank 1 maps the store of this machine in shared memory" in logs[1]


def test_ranks_impute_disjoint_shards_and_end_with_identical_stores(torchrun_run):
    out, _, _ = torchrun_run
    check_shards_and_stores(out, 48)


def test_the_global_batch_divides_over_the_ranks_and_each_rank_draws_its_own_pairs(torchrun_run, tmp_path, monkeypatch):
    _, two_ranks, _ = torchrun_run
    one_rank = tmp_path / "pairs"
    one_rank.mkdir()
    monkeypatch.setenv(RECORD_PAIRS_ENV, str(one_rank))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank of the 2-rank run (OMP_NUM_THREADS=1)
    try:
        train(compose_config(["trainer=cpu", "miri.rounds=1"], tmp_path / "one", base=COMMAND))  # the same run, 1 rank
    finally:
        torch.set_num_threads(threads)
    (alone,) = sorted(one_rank.iterdir())
    alone = load_file(alone)["pairs"]  # (steps, 2: i and j, batch)
    assert alone.shape == (STEPS, 2, 16)
    for round_index in (1, 2):
        files = [two_ranks / f"pairs_round{round_index:03d}_rank{rank}.safetensors" for rank in (0, 1)]
        ranks = [load_file(path)["pairs"] for path in files]
        # the same pairs per round in all, half on each rank, from different streams
        assert [p.shape for p in ranks] == [(STEPS, 2, 8)] * 2
        assert sum(p[:, 0].numel() for p in ranks) == alone[:, 0].numel() == STEPS * 16
        assert not torch.equal(ranks[0], ranks[1])
        assert (ranks[0] != ranks[1]).float().mean() > 0.5


def test_a_world_size_that_does_not_divide_the_batch_is_refused_before_training(tiny_config, tmp_path):
    with pytest.raises(ValueError, match=r"miri.batch_size=15 .* world size of 2 ranks"):
        train(tiny_config("trainer=ddp_cpu", "miri.batch_size=15"))
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_a_2_rank_slurm_job_killed_mid_round_and_started_again_ends_as_an_uninterrupted_run(torchrun_run, tmp_path):
    """The requeue of scripts/slurm/train.sbatch: the same ckpt_path=auto command, SIGKILLed
    mid-round (every task), started again; its last round matches the uninterrupted run's
    (which torchrun started) bit for bit."""
    whole, _, _ = torchrun_run
    out = tmp_path / "requeued"
    killed = run_ranks(out, srun_env, "trainer=ddp_cpu")
    log = out / "train_rank0.log"
    wait_for(lambda: log.exists() and "round 2: training" in log.read_text(), "round 2", killed)
    time.sleep(1.0)
    for process in killed:
        process.send_signal(signal.SIGKILL)
    for process in killed:
        process.wait(30)
    # killed in round 2: round 1 is whole, round 2 never was
    assert torch.load(out / "last.ckpt", weights_only=True)["MIRIDataModule"]["round"] == 1
    assert not (out / "imputed" / "round_002.safetensors").exists()

    again = run_ranks(out, srun_env, "trainer=ddp_cpu")
    finish(again, out)
    assert "round   1 | resumed" in (out / "console_0.txt").read_text()
    for folder in ("imputed", "flows"):
        a = load_file(out / folder / "round_002.safetensors")
        b = load_file(whole / folder / "round_002.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Lightning's SLURM auto-requeue is off: no requeue handler was installed (a SIGKILL never
    # reaches a handler, so the absence of an hpc_ckpt file here would prove nothing; the
    # handler's own test is test_under_slurm_lightnings_mid_round_requeue_checkpoint_is_off)
    assert "auto-requeueing enabled" not in log.read_text()


def test_ckpt_path_auto_starts_resumes_and_refuses_a_run_with_other_data(tiny_config, tmp_path):
    first = train(tiny_config("miri.rounds=1", "ckpt_path=auto"))
    assert [h["round"] for h in first.miri.history] == [0, 1]
    again = train(tiny_config("miri.rounds=2", "ckpt_path=auto"))
    assert [h["round"] for h in again.miri.history] == [1, 2]
    with pytest.raises(ValueError, match="another mask"):
        train(tiny_config("miri.rounds=3", "ckpt_path=auto", "mask.seed=5"))
    with pytest.raises(ValueError, match="other images"):
        train(tiny_config("miri.rounds=3", "ckpt_path=auto", "data.seed=1"))
    with pytest.raises(ValueError, match="overwrite=true"):
        train(tiny_config("miri.rounds=3", "ckpt_path=auto", "overwrite=true"))


def test_ckpt_path_auto_starts_afresh_over_what_a_run_killed_in_its_first_round_left(tiny_config, tmp_path):
    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out.tfevents.0.killed").write_bytes(b"stale")
    (out / "config.yaml").write_text("stale: true\n")
    run, ckpt_path = build(tiny_config("miri.rounds=1", "ckpt_path=auto"))
    assert ckpt_path is None
    assert not (out / "tensorboard" / "events.out.tfevents.0.killed").exists()
    assert "stale" not in (out / "config.yaml").read_text()


def test_under_slurm_lightnings_mid_round_requeue_checkpoint_is_off(tiny_config, tmp_path, monkeypatch):
    for key, value in srun_env(0, 1, free_port()).items():
        monkeypatch.setenv(key, value)
    run, _ = build(tiny_config("miri.rounds=1"))
    environment = run.trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and not environment.auto_requeue
    # and one such checkpoint left in the run directory is refused, not resumed mid-round
    (tmp_path / "run" / "hpc_ckpt_1.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match="hpc_ckpt_1.ckpt"):
        build(tiny_config("miri.rounds=1", "ckpt_path=auto"))


@pytest.mark.parametrize(
    ("environ", "rank"),
    [
        ({}, 0),
        ({"RANK": "5", "LOCAL_RANK": "1", "SLURM_PROCID": "0"}, 5),  # torchrun (inside a SLURM allocation)
        ({"SLURM_PROCID": "9", "SLURM_NTASKS": "16"}, 9),  # srun
        ({"SLURM_PROCID": "0", "LOCAL_RANK": "3", "WORLD_SIZE": "8", "NODE_RANK": "0"}, 3),  # Lightning's, in salloc
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "4", "NODE_RANK": "1"}, 3),  # Lightning's on node 1 of 2 (2 devices)
        ({"NODE_RANK": "1"}, 2),  # the process a user starts on node 1 of Lightning's launch (2 devices)
    ],
)
def test_the_global_rank_comes_from_whichever_launcher_started_the_process(environ, rank):
    assert global_rank(num_nodes=2, devices=2, environ=environ) == rank


def test_lightnings_process_names_give_way_to_the_job_name_in_log_files(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "SLURM_PROCID", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert log_name("train_ddp_process_1", 1, 2) == "train_rank1.log"
    assert log_name("train", 1, 2) == "train_rank1.log"


SBATCH = ROOT / "scripts" / "slurm" / "train.sbatch"


def split_flags(arguments: list[str]) -> tuple[list[str], list[str]]:
    """srun's own --flags, and the command after them."""
    at = next(i for i, a in enumerate(arguments) if not a.startswith("--"))
    return arguments[:at], arguments[at:]


def slurm_job(tmp_path, scontrol: str = "", restart: int = 0, args=("data.root=/data",), out=True) -> subprocess.Popen:
    """scripts/slurm/train.sbatch started with stand-ins for srun (records its command and
    environment, then waits like a long step) and scontrol (records the call, runs
    ``scontrol``, else ends the step as a requeue does); returns once the step runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(
        f'#!/bin/bash\necho $$ > {tmp_path}/step.pid\necho "$@" > {tmp_path}/srun.txt\n'
        f'echo "$SRUN_CPUS_PER_TASK $MIRI_CACHE_DIR" > {tmp_path}/srun_env.txt\nexec sleep 60\n'
    )
    (bin_dir / "scontrol").write_text(
        f'#!/bin/bash\necho "$@" > {tmp_path}/scontrol.txt\n' + (scontrol or f"kill $(cat {tmp_path}/step.pid)\n")
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    for old in ("srun.txt", "scontrol.txt"):
        (tmp_path / old).unlink(missing_ok=True)
    env = {
        **base_env(),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "777",
        "SLURM_JOB_NODELIST": "n[1-2]",
        "SLURM_CPUS_PER_TASK": "6",
        "SLURM_RESTART_COUNT": str(restart),
        **({"MIRI_OUTPUT_DIR": str(tmp_path / "out")} if out else {}),
    }
    env.pop("MIRI_CACHE_DIR", None)  # the script's default: beside the run directory
    job = subprocess.Popen(["bash", str(SBATCH), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "srun.txt").exists(), "srun", [job], timeout=30)
    return job


def end_step(tmp_path, job: subprocess.Popen) -> str:
    """Stop the stand-in step if it still runs (as the time limit would); the job's output."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(int((tmp_path / "step.pid").read_text()), signal.SIGTERM)
    return job.communicate(timeout=30)[0]


def time_limit(tmp_path, job: subprocess.Popen) -> str:
    """USR1 to the batch shell, as SLURM sends it before the time limit; waits until its trap
    has recorded the job's progress and either requeued it or declined, then ends the step."""
    state = tmp_path / "out" / ".requeues_777"
    before = state.read_text() if state.exists() else None
    job.send_signal(signal.SIGUSR1)
    wait_for(lambda: state.exists() and state.read_text() != before, "the requeue trap", [job], timeout=30)
    return end_step(tmp_path, job)


def test_the_slurm_script_requeues_itself_on_the_signal_and_runs_the_auto_command(tmp_path):
    text = SBATCH.read_text()
    for directive in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--requeue", "--mem=0", "--exclusive"):
        assert f"#SBATCH {directive}\n" in text
    (seconds,) = re.findall(r"#SBATCH --signal=B:USR1@(\d+)\n", text)  # to the batch shell, which requeues
    assert int(seconds) >= 30
    job = slurm_job(tmp_path)
    flags, command = split_flags((tmp_path / "srun.txt").read_text().split())
    assert "--kill-on-bad-exit=1" in flags  # one failing task ends them all
    assert command[:2] == ["python", "train.py"] and command[-2:] == [
        "data.root=/data",
        f"output_dir={tmp_path / 'out'}",
    ]
    cpus, cache = (tmp_path / "srun_env.txt").read_text().split()
    assert cpus == "6" and cache == f"{tmp_path / 'out'}/../cache"  # srun does not inherit --cpus-per-task
    # the command composes with the real configs, and resumes or starts
    cfg = compose_config(command[2:], tmp_path / "run", base=[])
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.strategy, cfg.ckpt_path) == (2, 8, "ddp", "auto")
    assert cfg.data.name == "celeba"
    job.send_signal(signal.SIGUSR1)
    out, _ = job.communicate(timeout=30)  # the trap ran at once, not after the 60 s step
    assert (tmp_path / "scontrol.txt").read_text().split() == ["requeue", "777"]
    assert "requeueing" in out
    # without MIRI_OUTPUT_DIR the run directory is train.py's: from output_dir=, run_name= or the mask
    for args, expected in [
        (["mask=channel"], "checkpoints/celeba_channel"),
        (["run_name=mine"], "checkpoints/mine"),
        (["output_dir=/data/runs/a", "mask=block"], "/data/runs/a"),
    ]:
        end_step(tmp_path, slurm_job(tmp_path, args=args, out=False))
        assert split_flags((tmp_path / "srun.txt").read_text().split())[1][-1] == f"output_dir={expected}"


def test_the_slurm_script_stops_requeueing_a_job_that_makes_no_progress(tmp_path):
    """A time limit reached a second time in a row without a new checkpoint is not requeued
    (a new checkpoint resets the count); a failed scontrol says what to do and fails the job."""
    for restart, new_checkpoint in enumerate([False, False, True, False]):
        if new_checkpoint:
            (tmp_path / "out" / "round_001.ckpt").write_bytes(b"round 1")
        out = time_limit(tmp_path, slurm_job(tmp_path, restart=restart))
        assert (tmp_path / "scontrol.txt").exists() and "near, requeueing" in out, out  # restarts 0 to 3
    out = time_limit(tmp_path, slurm_job(tmp_path, restart=4))  # nothing new since restarts 2 and 3
    assert not (tmp_path / "scontrol.txt").exists() and "no new checkpoint" in out and "not requeueing" in out
    (tmp_path / "out" / "last.ckpt").write_bytes(b"progress")
    job = slurm_job(tmp_path, restart=5, scontrol="exit 1\n")
    job.send_signal(signal.SIGUSR1)
    wait_for(lambda: (tmp_path / "scontrol.txt").exists(), "scontrol", [job], timeout=30)
    out = end_step(tmp_path, job)  # the step a failed requeue leaves behind: the time limit ends it
    assert job.returncode == 1 and "scontrol requeue failed" in out and "resumes from" in out
