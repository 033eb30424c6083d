"""Files of a run directory are data, never code: flow files name their network by a key of
``nets.NETS``; foreign targets, newer formats and foreign data sources are refused."""

import contextlib
import json

import pytest
import torch
from safetensors.torch import save_file

from miri_lightning.evaluation import load_truth
from miri_lightning.impute_cli import main as impute_main
from miri_lightning.inference import RunFlows
from miri_lightning.nets import NETS, ConditionalUNet, build_net
from miri_lightning.snapshots import FLOW_FORMAT, read_flow_metadata

UNET = {"channels": 1, "image_size": 8, "block_out_channels": [4, 8], "attention": [False, False], "norm_num_groups": 4}


def write_run(run_dir, net_metadata: dict, extra: dict | None = None, state: dict | None = None):
    """A run directory with one flow file whose metadata ``net`` is ``net_metadata``."""
    (run_dir / "flows").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("miri:\n  ode_steps: 2\n  solver: euler\n  init: noise\n")
    state = state if state is not None else {"weight": torch.zeros(1)}
    metadata = {"net": json.dumps(net_metadata), "round": "1", **(extra or {})}
    path = run_dir / "flows" / "round_001.safetensors"
    save_file(state, str(path), metadata=metadata)
    return path


def test_a_flow_naming_builtins_open_is_refused_and_runs_nothing(tmp_path, capsys):
    """Hydra's blocklist lets builtins.open through: before the allow-list, loading this run
    created (or truncated) ``victim``."""
    victim = tmp_path / "victim.txt"
    path = write_run(tmp_path / "run", {"_target_": "builtins.open", "_args_": [str(victim), "w"]})
    with pytest.raises(ValueError, match="builtins.open") as error:
        RunFlows(tmp_path / "run")
    assert str(path) in str(error.value)
    assert not victim.exists()
    assert impute_main(["--run", str(tmp_path / "run"), "--array", str(tmp_path / "x.npy"), "--output", "o"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0]
    assert not victim.exists()


def test_a_flow_naming_an_unknown_key_or_nested_target_runs_nothing(tmp_path):
    victim = tmp_path / "victim.txt"
    write_run(tmp_path / "a", {"name": "os.system"})
    with pytest.raises(ValueError, match="not one of miri_lightning's"):
        RunFlows(tmp_path / "a")
    # an allowed key whose arguments hide a target: passed as a plain value, never instantiated
    nested = {**UNET, "name": "unet", "attention": {"_target_": "builtins.open", "_args_": [str(victim), "w"]}}
    with contextlib.suppress(ValueError, TypeError):
        build_net(nested, "flow")
    assert not victim.exists()


def test_a_flow_of_a_newer_format_is_refused_with_its_file_named(tmp_path):
    path = write_run(tmp_path / "run", {"name": "unet", **UNET}, {"format": str(FLOW_FORMAT + 1)})
    with pytest.raises(ValueError, match="newer miri_lightning") as error:
        RunFlows(tmp_path / "run")
    assert str(path) in str(error.value)
    assert path.exists()  # nothing deleted


def test_a_format_1_flow_with_one_of_our_targets_still_loads(tmp_path):
    """Runs written before the keys stored the Hydra ``_target_``: ours map to their key."""
    net = ConditionalUNet(**UNET)
    write_run(tmp_path / "run", {"_target_": "miri_lightning.nets.ConditionalUNet", **UNET}, state=net.state_dict())
    flows = RunFlows(tmp_path / "run")
    assert isinstance(flows.nets[0], ConditionalUNet) and flows.fill_mean is None
    assert read_flow_metadata(tmp_path / "run" / "flows" / "round_001.safetensors")["net"]["name"] == "unet"
    assert set(NETS) == {"unet", "paper_cnn", "mlp"}


def test_evaluation_refuses_a_config_naming_a_foreign_data_source(tmp_path):
    victim = tmp_path / "victim.txt"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"data:\n  _target_: builtins.open\n  file: {victim}\n  mode: w\n")
    with pytest.raises(ValueError, match="builtins.open"):
        load_truth(run)
    assert not victim.exists()
