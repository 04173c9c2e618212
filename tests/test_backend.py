"""vgsn.backend: the library and mode chosen once, nothing printed, one-line errors.

Each case imports vgsn.backend in a fresh interpreter (the choice is made at import).
"""
import json
import os
import subprocess
import sys

import pytest

from vgsn import backend

PROBE = ("import json, vgsn.backend as B; print(json.dumps({'name': B.NAME, 'mode': B.MODE, "
         "'config_mode': str(B.config.mode), 'blas': B.blas_warning()}))")


def _import(env_changes, code=PROBE):
    env = {k: v for k, v in os.environ.items()
           if k not in ("VGSN_MODE", "VGSN_BACKEND", "VGSN_QUIET_BLAS")}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)


def test_in_this_process():
    assert backend.MODE in backend.MODES
    assert backend.function is backend._lib.function          # plain: no graph cache behind it
    msg = backend.blas_warning()
    assert msg is None if backend.blas_linked() or backend.MODE != "c" else "links no BLAS" in msg
    assert "graphcache" not in backend.__dict__
    assert backend.floatX == "float32"
    # The flags were the library's to read at import; the environment is the user's again.
    assert "float32" not in os.environ.get(backend.NAME.upper() + "_FLAGS", "")


def test_import_prints_nothing_and_blas_warning_says_the_fix():
    flags = backend.NAME.upper() + "_FLAGS"
    out = _import({flags: "blas__ldflags=", "VGSN_MODE": "C"})          # no BLAS linked
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    (line,) = out.stdout.splitlines()                 # only the probe's own line
    got = json.loads(line)
    assert got["mode"] == "c" and got["name"] == backend.NAME
    assert "links no BLAS" in got["blas"] and "libopenblas-dev" in got["blas"]
    assert "\n" not in got["blas"]
    quiet = json.loads(_import({flags: "blas__ldflags=", "VGSN_QUIET_BLAS": "1",
                                "VGSN_MODE": "C"}).stdout)
    assert quiet["blas"] is None


@pytest.mark.parametrize("value", ["GPU", "fast_run"])
def test_unknown_mode_is_a_one_line_error(value):
    out = _import({"VGSN_MODE": value})
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: VGSN_MODE=") and repr(value) in last


@pytest.mark.skipif(backend.NAME != "aesara", reason="Aesara only")
def test_aesara_runs_the_c_mode_only():
    out = _import({"VGSN_MODE": "JAX", "VGSN_BACKEND": "aesara"})
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode != 0 and last.startswith("ValueError: VGSN_MODE=JAX needs PyTensor")
    ok = json.loads(_import({"VGSN_MODE": "c"}).stdout)
    assert ok["mode"] == "c"


@pytest.mark.skipif(backend.NAME != "pytensor", reason="PyTensor only")
@pytest.mark.parametrize("value,mode,lib_mode", [("C", "c", "CVM"), ("cvm", "c", "CVM"),
                                                 ("JAX", "jax", "JAX"), ("numba", "numba", "NUMBA")])
def test_pytensor_modes(value, mode, lib_mode):
    pytest.importorskip({"jax": "jax", "numba": "numba"}.get(mode, "numpy"))
    got = json.loads(_import({"VGSN_MODE": value}).stdout)
    assert (got["mode"], got["config_mode"]) == (mode, lib_mode)
    assert mode == "c" or got["blas"] is None         # BLAS linking is the C mode's business


@pytest.mark.skipif(backend.NAME != "pytensor", reason="PyTensor only")
def test_mode_contradicting_the_users_flags():
    out = _import({"VGSN_MODE": "JAX", "PYTENSOR_FLAGS": "mode=CVM"})
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode != 0 and "keep one of the two" in last
    got = json.loads(_import({"PYTENSOR_FLAGS": "mode=NUMBA"}).stdout)
    assert got["mode"] == "numba"                     # the user's flag, reported as it is


def test_default_mode_is_jax_where_it_is_installed_and_c_elsewhere():
    import importlib.util
    expect = ("jax" if sys.version_info >= (3, 12) and backend.NAME == "pytensor"
              and importlib.util.find_spec("jax") is not None else "c")
    assert backend.default_mode() == expect
    got = json.loads(_import({}).stdout)                 # VGSN_MODE unset
    assert got["mode"] == expect
    assert json.loads(_import({"VGSN_MODE": "C"}).stdout)["mode"] == "c"


NUMERICS = ("import json, os, jax, vgsn.backend as B; print(json.dumps({'mode': B.MODE, "
            "'jax': jax.config.jax_default_matmul_precision, 'numerics': B.numerics(), "
            "'describe': B.describe()}))")


def _numerics(env_changes):
    env = {k: v for k, v in os.environ.items() if k not in (
        "VGSN_MODE", "VGSN_BACKEND", "VGSN_MATMUL_PRECISION", "JAX_DEFAULT_MATMUL_PRECISION",
        "XLA_FLAGS")}
    env.update({"VGSN_BACKEND": "pytensor", "VGSN_MODE": "JAX", **env_changes})
    out = subprocess.run([sys.executable, "-c", NUMERICS], env=env, capture_output=True,
                         text=True, timeout=300)
    return out, (json.loads(out.stdout) if out.returncode == 0 else None)


jax_only = pytest.mark.skipif(backend.NAME != "pytensor" or
                              __import__("importlib.util").util.find_spec("jax") is None,
                              reason="the JAX mode needs PyTensor and jax")


@jax_only
def test_jax_mode_computes_full_float32_products_and_deterministic_kernels_by_default():
    out, got = _numerics({})
    assert out.returncode == 0, out.stderr
    assert got["jax"] == "highest" == got["numerics"]["matmul_precision"]
    assert got["numerics"]["xla_flags"] == "--xla_gpu_deterministic_ops=true"
    assert "matmul precision highest" in got["describe"]
    assert "--xla_gpu_deterministic_ops=true" in got["describe"]


@jax_only
def test_jax_numerics_keep_the_users_choices():
    # jax's own variable and the user's XLA flags are left as they are...
    out, got = _numerics({"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16",
                          "XLA_FLAGS": "--xla_gpu_deterministic_ops=false --xla_cpu_use_thunk_runtime=true"})
    assert out.returncode == 0, out.stderr
    assert got["jax"] == "bfloat16"
    assert got["numerics"]["xla_flags"] == ("--xla_gpu_deterministic_ops=false "
                                            "--xla_cpu_use_thunk_runtime=true")
    # ... other flags gain the deterministic one; --matmul-precision tf32 opts into TF32.
    out, got = _numerics({"VGSN_MATMUL_PRECISION": "tf32", "XLA_FLAGS": "--xla_dump_to=/dev/null"})
    assert out.returncode == 0, out.stderr
    assert got["jax"] == "tensorfloat32"
    assert got["numerics"]["xla_flags"] == "--xla_dump_to=/dev/null --xla_gpu_deterministic_ops=true"


@jax_only
def test_unknown_matmul_precision_is_a_one_line_error():
    out, _ = _numerics({"VGSN_MATMUL_PRECISION": "half"})
    assert out.returncode != 0
    assert "VGSN_MATMUL_PRECISION='half' is not a precision: set it to highest or tf32" in out.stderr


def test_c_mode_numerics():
    if backend.MODE != "c":
        pytest.skip("this process runs another mode")
    assert backend.numerics() == {"matmul_precision": "highest", "xla_flags": None}
    assert "matmul" not in backend.describe()
