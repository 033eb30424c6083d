"""The GPU check (``pytest -m gpu``): scripts/gpu_check.py on the CUDA device, as a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.gpu
def test_the_gpu_check_passes(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    env = {"MIRI_GPU_CHECK_DIR": str(tmp_path / "gpu_check"), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
    )
    print(result.stdout[-6000:])
    assert result.returncode == 0 and result.stdout.rstrip().endswith("PASS"), (
        result.stdout[-6000:] + result.stderr[-3000:]
    )
