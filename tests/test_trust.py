"""The trust items: what a run directory, a flow file, a checkpoint or a command line may not
make the project do (delete a run it did not write, allocate without bound, expand an alias
bomb, read the environment, print a traceback), and a first run's screen without noise."""

import json
import logging
import re
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, compose_config

from miri_lightning import MIRIImputer, nets
from miri_lightning.cli import run_or_explain
from miri_lightning.inference import RunFlows
from miri_lightning.snapshots import flow_path, save_atomically, save_flow

CONFIG = "miri: {ode_steps: 2, solver: euler, init: noise, init_noise: 0.0}\n"


def flow_run(path, config=CONFIG, image=False):
    """A run directory of one round's tiny real flow (an MLP on 3 columns, or a CNN on 1×4×4
    images) and ``config`` as its config.yaml."""
    spec = (
        {"name": "paper_cnn", "channels": 1, "image_size": 4, "width": 4, "blocks": 0}
        if image
        else {"name": "mlp", "dim": 3, "widths": [4]}
    )
    save_flow(path, 1, nets.build_net(spec, "test"), spec)
    (path / "config.yaml").write_text(config)
    return path


def one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


# -- a: dependencies ------------------------------------------------------------------------


def test_torch_and_torchvision_floors_exclude_the_weights_only_bypass():
    # sabotage: "torch>=2.4" in pyproject.toml
    floors = dict(re.findall(r'^\s*"(torch|torchvision)>=([\d.]+)",?$', (ROOT / "pyproject.toml").read_text(), re.M))
    as_tuple = lambda version: tuple(int(part) for part in version.split("."))  # noqa: E731
    assert as_tuple(floors["torch"]) >= (2, 10)  # GHSA-63cw-57p8-fm3p
    assert as_tuple(floors["torchvision"]) >= (0, 25)  # the release built for torch 2.10


# -- b: a refit never deletes a run it did not create ---------------------------------------


def table(n=32, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)
    x[::3, 1] = np.nan
    return x


TABLE_IMPUTER = {"rounds": 1, "steps_per_round": 3, "batch_size": 16, "ode_steps": 2, "accelerator": "cpu"}


def test_fit_refuses_an_output_dir_holding_a_run_it_did_not_write(tmp_path):
    # sabotage: drop the raise in MIRIImputer._claim (fit deletes the run with overwrite=true)
    run = tmp_path / "someone_elses_run"
    run.mkdir()
    (run / "last.ckpt").write_bytes(b"precious")
    (run / "config.yaml").write_text("precious")
    with pytest.raises(ValueError, match=r"output_dir .*someone_elses_run already holds a run \(last.ckpt\)"):
        MIRIImputer(output_dir=str(run), **TABLE_IMPUTER).fit(table())
    assert (run / "last.ckpt").read_bytes() == b"precious" and (run / "config.yaml").read_text() == "precious"


def test_a_loaded_imputer_refits_without_deleting_its_folder_and_its_own_run_is_replaced(tmp_path):
    run = tmp_path / "run"
    imputer = MIRIImputer(output_dir=str(run), **TABLE_IMPUTER).fit(table())
    first = (run / "flows" / "round_001.safetensors").read_bytes()
    imputer.fit(table(seed=1))  # its own run: replaced
    assert (run / "flows" / "round_001.safetensors").read_bytes() != first
    kept = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    loaded = MIRIImputer.load(run)  # its parameters name run as output_dir
    assert loaded.output_dir == str(run)
    with pytest.raises(ValueError, match="did not create"):
        loaded.fit(table(seed=2))
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == kept


# -- c: sizes bounded before anything is allocated -----------------------------------------


def huge_flow(path, spec):
    save_atomically(flow_path(path, 1), {"w": torch.zeros(1)}, {"format": "2", "net": json.dumps(spec), "round": "1"})
    (path / "config.yaml").write_text(CONFIG)
    return path


def no_real_build(monkeypatch, key):
    """Building ``key`` for real fails the test (only the shape count on the meta device may)."""
    real = nets.NETS[key]

    def guarded(**arguments):
        assert torch.empty(0).device.type == "meta", "the network was built before its sizes were checked"
        return real(**arguments)

    monkeypatch.setitem(nets.NETS, key, guarded)


def test_a_flow_file_with_absurd_widths_is_refused_before_building(tmp_path, monkeypatch):
    # sabotage: loop over {} instead of MAX_SIZES in nets.check_size
    monkeypatch.setitem(nets.NETS, "mlp", lambda **_: pytest.fail("built an MLP of width 2**33"))
    run = huge_flow(tmp_path, {"name": "mlp", "dim": 3, "widths": [2**33]})
    with pytest.raises(
        ValueError, match=r"round_001\.safetensors: .* widths \(each\) must be an integer from 0 to 4096"
    ):
        RunFlows(run)


def test_a_flow_file_whose_network_would_be_too_large_is_refused_before_building(tmp_path, monkeypatch):
    # every argument within its bound, ~19e9 parameters in all; sabotage: drop the
    # MAX_PARAMETERS check of nets.check_size
    no_real_build(monkeypatch, "paper_cnn")
    spec = {"name": "paper_cnn", "channels": 3, "image_size": 32, "width": 4096, "blocks": 64}
    with pytest.raises(ValueError, match=r"round_001\.safetensors: the paper_cnn network would have .* parameters"):
        RunFlows(huge_flow(tmp_path, spec))


def test_ode_steps_bounded_in_a_run_dir_and_in_a_train_config(tmp_path):
    # sabotage: int(miri.ode_steps) in RunFlows.__init__ / drop check_ode_steps from check_types
    from miri_lightning.settings import check_types

    run = flow_run(tmp_path / "run", CONFIG.replace("ode_steps: 2", "ode_steps: 1000000000"))
    with pytest.raises(ValueError, match=r"miri.ode_steps of .*config.yaml must be an integer from 1 to 10000"):
        RunFlows(run)
    with pytest.raises(ValueError, match="from 1 to 10000"):
        check_types(compose_config(["miri.ode_steps=20000"], tmp_path / "train"))


# -- d: a run's config.yaml is data ---------------------------------------------------------


def alias_bomb(levels=6, width=4) -> str:
    lines = [CONFIG.rstrip(), "a0: &a0 [x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_in_config_yaml_is_refused_at_once(tmp_path):
    # unguarded, OmegaConf expands this one (4**6 leaves) in seconds, each level 4× longer;
    # sabotage: drop the anchor/alias event check of run_dir.load_run_config
    from miri_lightning.evaluation import load_truth

    run = flow_run(tmp_path, alias_bomb())
    for read in (RunFlows, load_truth):
        started = time.perf_counter()
        with pytest.raises(ValueError, match="anchor or alias"):
            read(run)
        assert time.perf_counter() - started < 1.0


def test_config_yaml_interpolations_are_neither_resolved_nor_echoed(tmp_path, monkeypatch):
    # sabotage: drop the interpolation check of run_dir.load_run_config
    from miri_lightning.evaluation import load_truth

    monkeypatch.setenv("MIRI_TRUST_SECRET", "hunter2")
    run = flow_run(tmp_path, CONFIG.replace("solver: euler", "solver: '${oc.env:MIRI_TRUST_SECRET}'"))
    with pytest.raises(ValueError, match=r"interpolation .* at miri.solver") as raised:
        RunFlows(run)
    assert "hunter2" not in str(raised.value)
    (run / "config.yaml").write_text(CONFIG + "data: {_target_: '${oc.env:MIRI_TRUST_SECRET}'}\n")
    with pytest.raises(ValueError, match=r"interpolation .* at data._target_") as raised:
        load_truth(run)
    assert "hunter2" not in str(raised.value)


# -- e, f: one error line --------------------------------------------------------------------


def test_cfg_job_type_checks(monkeypatch, capsys):
    # sabotage: drop run_or_explain(check_printed_config) from train_cli.main (Hydra prints the config)
    from miri_lightning import train_cli

    monkeypatch.setattr(sys, "argv", ["train.py", "--cfg", "job", "miri.rounds=five"])
    with pytest.raises(SystemExit) as exited:
        train_cli.main()
    assert exited.value.code == 1
    assert one_error_line(capsys.readouterr().err) == "error: miri.rounds must be an integer, got 'five'"


def test_a_checkpoint_without_global_step_is_one_error_line(tmp_path, capsys):
    # sabotage: drop the global_step check of run_dir.check_checkpoint (a KeyError traceback)
    from miri_lightning.run import train

    ckpt = tmp_path / "foreign.ckpt"
    torch.save({"MIRIDataModule": {}, "hyper_parameters": {"net": {}}}, ckpt)
    cfg = compose_config([f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(SystemExit):
        run_or_explain(lambda: train(cfg))
    assert "holds no global_step" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "flag, message",
    [
        (["--num-samples", "0"], "error: --num-samples must be at least 1, got 0"),
        (["--device", f"cuda:{torch.cuda.device_count()}"], "is not on this machine"),
    ],
)
def test_miri_impute_bad_flags_are_one_error_line(tmp_path, capsys, flag, message):
    # sabotage: drop the --num-samples check of impute_cli.main / check_device in RunFlows.__init__
    from miri_lightning.impute_cli import main

    run = flow_run(tmp_path / "run", image=True)
    x = np.full((2, 1, 4, 4), 0.5, np.float32)
    x[:, :, 1, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    argv = ["--run", str(run), "--array", str(tmp_path / "x.npy"), "--output", str(tmp_path / "out"), *flag]
    assert main(argv) == 1
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# -- g: the first run's screen ---------------------------------------------------------------


def test_first_run_screen_has_no_flops_no_v_num_no_advert(tmp_path, capsys):
    # sabotage: drop the ModelSummary callback in run.build (Lightning's shows FLOPs 0) / the
    # pop of v_num in ProgressBar.get_metrics / the NoAdvert filter in run.quiet_known_warnings
    from lightning.pytorch.callbacks import ModelSummary as LightningSummary

    from miri_lightning.callbacks.progress import ProgressBar
    from miri_lightning.run import LIGHTNING_NOTICES, build

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    keep = Keep()
    notices = [logging.getLogger(name) for name in LIGHTNING_NOTICES]
    for logger in notices:
        logger.addHandler(keep)
    try:
        cfg = compose_config(
            ["trainer.enable_model_summary=true", "trainer.enable_progress_bar=true"], tmp_path / "run", base=TINY
        )
        run, _ = build(cfg)
    finally:
        for logger in notices:
            logger.removeHandler(keep)
    assert any("GPU available" in m for m in keep.messages)  # the handler saw Lightning's notices
    assert not [m for m in keep.messages if "litlogger" in m or "Tip" in m]

    summaries = [c for c in run.trainer.callbacks if isinstance(c, LightningSummary)]
    assert len(summaries) == 1
    capsys.readouterr()
    summaries[0].on_fit_start(run.trainer, run.module)
    shown = capsys.readouterr().out
    assert "ConditionalUNet" in shown and "Total params" in shown and "FLOPs" not in shown

    bar = next(c for c in run.trainer.callbacks if isinstance(c, ProgressBar))
    assert "v_num" not in bar.get_metrics(run.trainer, run.module)
