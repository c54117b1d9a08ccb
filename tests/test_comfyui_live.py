"""The pack inside a real ComfyUI (tests/comfyui_live.py), when a ComfyUI checkout is given.

    UNIWORLD_COMFYUI_DIR=/path/to/ComfyUI UNIWORLD_COMFYUI_PYTHON=/path/to/its/python \\
        pytest tests/test_comfyui_live.py

CI has no ComfyUI, so there it is skipped; the stand-ins of tests/comfyui_standins.py
cover the same ground without one (tests/test_comfy_standins.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

COMFYUI = os.environ.get("UNIWORLD_COMFYUI_DIR")


@pytest.mark.skipif(not COMFYUI, reason="no ComfyUI checkout given: set UNIWORLD_COMFYUI_DIR (and "
                    "UNIWORLD_COMFYUI_PYTHON, the Python that runs it) to run the pack inside a real ComfyUI")
def test_every_shipped_workflow_runs_and_opens_clean_in_a_real_comfyui():
    python = os.environ.get("UNIWORLD_COMFYUI_PYTHON", sys.executable)
    run = subprocess.run([python, str(REPO / "tests" / "comfyui_live.py"), "--comfyui", str(Path(COMFYUI))],
                         capture_output=True, text=True, timeout=3600)
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert run.returncode == 0 and not failed, "\n".join(failed) or run.stderr[-3000:]
