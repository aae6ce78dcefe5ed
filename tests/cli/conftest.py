"""Fixtures for the end-to-end tests of the `xattn` command-line tool."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def xattn_bin():
    path = Path(os.environ.get("XATTN_BIN", REPO / "build" / "xattn"))
    if not path.is_file():
        pytest.fail(f"xattn binary not found at {path}; build it or set XATTN_BIN")
    return path


@pytest.fixture
def run(xattn_bin):
    """Runs the binary with string arguments; returns the CompletedProcess (text mode)."""

    def _run(*args, check_rc=None):
        proc = subprocess.run([str(xattn_bin), *map(str, args)], capture_output=True, text=True,
                              timeout=120)
        if check_rc is not None:
            assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    return _run


@pytest.fixture
def save(tmp_path):
    """Saves an array as tmp_path/<name>.npy and returns the path."""

    def _save(name, array):
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
        return path

    return _save
