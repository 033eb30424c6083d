"""The package installs without a checkout: the wheel carries the configs and the console scripts."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_ships_every_config_and_both_console_scripts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("miri_lightning-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {str(p.relative_to(ROOT)) for p in (ROOT / "miri_lightning" / "configs").rglob("*.yaml")}
    assert configs and configs <= names, sorted(configs - names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "miri-train = miri_lightning.train_cli:main" in scripts
    assert "miri-impute = miri_lightning.impute_cli:main" in scripts
    assert not any(n.startswith(("tests/", "checkpoints/", "scripts/")) for n in names)


def test_every_config_is_inside_the_package_and_found_from_it():
    from miri_lightning import CONFIG_DIR

    assert CONFIG_DIR == ROOT / "miri_lightning" / "configs"
    assert (CONFIG_DIR / "train.yaml").is_file() and not (ROOT / "configs").exists()
