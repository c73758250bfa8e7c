"""Two `jax.distributed` processes on 127.0.0.1 (CPU collectives) train like one process."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    # XLA_FLAGS (backend optimisation off, see conftest) goes along: compiling dominates here.
    return env


def test_two_processes_match_one(tmp_path):
    sys.path.insert(0, os.path.dirname(WORKER))
    try:
        from distributed_worker import train_few_steps
    finally:
        sys.path.pop(0)
    a = train_few_steps(jax.devices()[:1])  # one process, one device
    multi = tmp_path / "multi.json"
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(multi), port, "2", str(i)],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    b = json.loads(multi.read_text())
    assert (a["devices"], b["devices"]) == (1, 2)
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
    np.testing.assert_allclose(a["checksum"], b["checksum"], rtol=1e-5)
    np.testing.assert_allclose(a["first"], b["first"], rtol=1e-4, atol=1e-6)
