"""xattn.torch_dist over torch.distributed (gloo on loopback): torch_dist_worker.py run as 2, 3
and 4 processes, each comparing its forward results and gradients with one process's
xattn.attention and float64 math; bad input must raise on every rank, never hang."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import xattn

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

HERE = Path(__file__).resolve().parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(world, suite, timeout):
    """Runs the worker as `world` processes; (return codes, outputs). A rank still running after
    `timeout` seconds is killed and fails the test: a hang must not block CI."""
    package_dir = Path(xattn.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=f"{package_dir}{os.pathsep}{HERE}", OMP_NUM_THREADS="1",
               MASTER_ADDR="127.0.0.1")
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(HERE / "torch_dist_worker.py"), str(r),
                               str(world), port, suite], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world)]
    outputs, codes = [], []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            out, _ = p.communicate()
            pytest.fail(f"a rank hung (killed after {timeout} s):\n{out}")
        outputs.append(out)
        codes.append(p.returncode)
    return codes, outputs


@pytest.mark.parametrize("world", [2, 3, 4])
def test_matches_one_process(world):
    codes, outputs = run_ranks(world, "all", timeout=120)
    for r, (code, out) in enumerate(zip(codes, outputs)):
        assert code == 0, f"rank {r}:\n{out}"
        # 9 split-KV cases, 32 ring cases (16 per layout, 10 of them masks and lengths; and 1
        # and 2 more in a subgroup of ranks 1 .. P-1 where it has 2 ranks or more, on its
        # members), 11 bad inputs and a good call after.
        in_subgroup = world >= 3 and r >= 1
        assert out.count("PASS split_kv") == 9 + in_subgroup, out
        assert out.count("PASS ring") == 32 + 2 * in_subgroup, out
        assert out.count("PASS bad input") == 12, out


@pytest.mark.parametrize("suite", ["missing", "mismatched"])
def test_no_hang(suite):
    codes, outputs = run_ranks(2, suite, timeout=60)
    for r, (code, out) in enumerate(zip(codes, outputs)):
        assert code == 0, f"rank {r}:\n{out}"
    assert "PASS bad input" in outputs[0], outputs[0]
