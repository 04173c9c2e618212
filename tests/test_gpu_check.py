"""benchmarks/gpu_check.sh dry-runs on a CPU (GPU_CHECK_ALLOW_CPU=1 GPU_CHECK_TINY=1): every
stage runs at tiny sizes, writes its key, and a failing stage makes the script exit 1."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from vgsn import backend

from _paths import ROOT

pytestmark = [
    pytest.mark.skipif(backend.NAME != "pytensor", reason="the check runs the JAX mode: PyTensor"),
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed"),
]

KEYS = ("device", "matmul_precision", "agree_max_rel", "guided_ms",
        "bit_identical_two_processes", "paper_run")


def _check(out, timeout=900, **env):
    env = dict(os.environ, OUT=str(out), GPU_CHECK_ALLOW_CPU="1", GPU_CHECK_TINY="1", **env)
    for var in ("VGSN_MODE", "VGSN_MATMUL_PRECISION", "XLA_FLAGS"):
        env.pop(var, None)
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), sys.executable],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    got = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() \
        else None
    return res, got


def test_the_cpu_dry_run_passes_every_stage_and_its_run_resumes(tmp_path):
    res, got = _check(tmp_path / "a")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert got["failed"] == []
    for key in KEYS:
        assert got[key] is not None, key
    assert got["matmul_precision"] == "highest"
    assert "--xla_gpu_deterministic_ops=true" in got["xla_flags"]
    assert 0 <= got["agree_max_rel"] <= 2e-5
    assert got["guided_ms"]["highest"] > 0 and got["guided_ms"]["tf32"] > 0
    assert 0 < got["guided_ms"]["highest_noise_share"] < 1
    assert got["bit_identical_two_processes"] is True
    first = got["paper_run"]
    assert first["from_update"] == 0 and first["returncode"] in (0, 130)
    assert (tmp_path / "a" / "paper_run" / "checkpoint.h5").exists()
    # The next call resumes the run folder the first brought back.
    res, again = _check(tmp_path / "b", GPU_CHECK_ONLY="device,paper_run",
                        GPU_CHECK_RUN=str(tmp_path / "a" / "paper_run"))
    assert res.returncode == 0, res.stdout[-3000:]
    assert again["paper_run"]["from_update"] == first["update"] > 0
    assert again["paper_run"]["update"] >= first["update"]
    assert again["paper_run"]["argv"][:1] == ["--resume"]


def test_a_failing_stage_makes_the_check_exit_non_zero(tmp_path):
    res, got = _check(tmp_path, GPU_CHECK_ONLY="device,matmul_precision,guided_ms",
                      GPU_CHECK_FAIL="matmul_precision", GPU_CHECK_BUDGET_S="120")
    assert res.returncode == 1
    assert got["failed"] == ["matmul_precision"]
    assert got["matmul_precision"] is None
    assert "made to fail" in got["matmul_precision_error"]
    assert got["device"]["kind"] == "cpu" and got["guided_ms"]["highest"] > 0   # went on
    res, _ = _check(tmp_path / "x", GPU_CHECK_ONLY="devices")
    assert res.returncode == 2 and "no stage named devices" in res.stderr
