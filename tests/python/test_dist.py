"""xattn.dist over mpi4py: dist_split_kv_worker.py (attention_split_kv and its backward) and
dist_ring_worker.py run by 2 and 3 processes under mpirun."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import xattn

pytest.importorskip("mpi4py")
if shutil.which("mpirun") is None:
    pytest.skip("no mpirun", allow_module_level=True)
try:
    from xattn import _xattn_dist  # noqa: F401
except ImportError:
    pytest.skip("xattn built without MPI", allow_module_level=True)

HERE = Path(__file__).resolve().parent
SPLIT_KV_BACKWARD_CHECKS = 7  # dist_split_kv_worker.py: 5 gradient cases, 2 bad inputs


@pytest.mark.parametrize("worker, ranks", [("dist_split_kv_worker.py", 2),
                                            ("dist_split_kv_worker.py", 3),
                                            ("dist_ring_worker.py", 2), ("dist_ring_worker.py", 3)])
def test_under_mpirun(worker, ranks):
    package_dir = Path(xattn.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=f"{package_dir}{os.pathsep}{HERE}", OMP_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # Shared memory only, as tests/CMakeLists.txt's MPI tests; a timeout so a hang fails.
    cmd = ["mpirun", "--oversubscribe", "--mca", "btl", "self,vader",
           "--mca", "btl_vader_single_copy_mechanism", "none", "-np", str(ranks),
           sys.executable, str(HERE / worker)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    checks = 8 if worker == "dist_split_kv_worker.py" else 12
    for r in range(ranks):
        assert f"rank {r}: {checks} checks passed" in run.stdout, run.stdout + run.stderr
    if worker == "dist_split_kv_worker.py":  # then attention_split_kv_backward's own count
        for r in range(ranks):
            assert f"rank {r}: {SPLIT_KV_BACKWARD_CHECKS} backward checks passed" in run.stdout, \
                run.stdout + run.stderr
