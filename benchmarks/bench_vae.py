"""Speed of one OneStageModel ``train_step`` at the paper's MNIST sizes.

Prints, for MNIST-1 (784-1500-1500-64, Bernoulli) and MNIST-2 (784-1000-1000-50,
Gaussian), batch 100 rows x 5 samples = 500: compile seconds with a cold cache and
warm (the same cache again), each in a fresh subprocess on a temporary cache; the
median seconds per update (steady state: after a warm-up update, outputs fetched),
GFLOP/s, and the ratio to the peak measured in the same run: the host's SGEMM (numpy)
or, when JAX runs on a GPU, the device's own (a large product, waited for). It also
prints the update's GEMM floor: the same matrix products timed alone, each shape at
the faster of numpy's BLAS (``OPENBLAS_CORETYPE`` unset, in its own process) and
XLA's dot (``benchmarks/_gemm.py``; on a GPU XLA's alone), so one can read how much
of the update is overhead and how far the product shapes themselves are from the
square-matrix peak. The last line is
machine-readable (the first four fields are the issue's; the floor ratios follow):

    RESULT mnist1_s_per_update=<s> mnist1_peak_ratio=<r> mnist2_s_per_update=<s> mnist2_peak_ratio=<r> mnist1_floor_ratio=<r> mnist2_floor_ratio=<r>

for the first back-end; with several (``--backend c,jax``) they run in the same
process, alternating update by update, each line names its back-end, and a
``RATIO`` line gives each back-end's seconds over the first's. Compile seconds
are to the end of the first update (JAX compiles with XLA on the first call).

Usage: python benchmarks/bench_vae.py [--backend c,jax] [--steps 30] [--no-compile-timing]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _backends  # noqa: E402
import _report  # noqa: E402
from _gemm import (floor_from, mlp_products, numpy_floor_alone, sgemm_peak as numpy_peak,  # noqa: E402
                   xla_peak, xla_per_product)


SIZES = {
    "mnist1": dict(x_dim=784, z_dim=64, q_hidden=(1500, 1500), p_hidden=(1500, 1500),
                   x_type="bernoulli"),
    "mnist2": dict(x_dim=784, z_dim=50, q_hidden=(1000, 1000), p_hidden=(1000, 1000),
                   x_type="gaussian"),
}
ROWS, REPEAT = 100, 5


def update_flops(cfg):
    """Matrix-product FLOPs of one update: forward, and backward to weights and
    inputs (no input gradient for q's first layer, whose input is data)."""
    return sum(2 * m * k * n * count for m, k, n, count in floor_products(cfg))


def floor_products(cfg, rows=ROWS * REPEAT):
    """The update's products for ``gemm_floor`` (q's two heads are two products)."""
    def dims(n_in, hidden, n_out, heads):
        sizes = [n_in] + list(hidden)
        return list(zip(sizes[:-1], sizes[1:])) + [(hidden[-1], n_out)] * heads
    return (mlp_products(rows, dims(cfg["x_dim"], cfg["q_hidden"], cfg["z_dim"], 2))
            + mlp_products(rows, dims(cfg["z_dim"], cfg["p_hidden"], cfg["x_dim"], 1),
                           input_grad_first=True))


def on_gpu():
    """True when this process's JAX mode computes on a GPU/TPU."""
    from vgsn import backend
    if backend.MODE != "jax":
        return False
    import jax
    return jax.devices()[0].platform != "cpu"


def sgemm_peak(repeats=5):
    """Best float32 GEMM rate (GFLOP/s): numpy's BLAS on the host (best of 2048, 3000
    and 4096 squared), and in the JAX mode XLA's (4096 squared, waited for)."""
    from vgsn import backend
    peaks = {"numpy": numpy_peak(repeats=repeats)}
    if backend.MODE == "jax":
        peaks["xla"] = xla_peak(repeats=repeats)
    return peaks


def _timed(f, *args):
    t = time.perf_counter()
    f(*args)
    return time.perf_counter() - t


def _build(name, mode=None):
    from vgsn.model.vae import OneStageModel
    model = OneStageModel(**SIZES[name], seed=0, lr=1e-4)
    return model.use_mode(mode) if mode else model


def compile_only(name):
    """Child process: build the model, then time compiling train_step and its first
    call (not the orthogonal init, several seconds at 1500 units); print the seconds
    as JSON."""
    model = _build(name)
    X = np.random.default_rng(0).random((ROWS, SIZES[name]["x_dim"])).astype(np.float32)
    t = time.perf_counter()
    model.compile(["train_step"])
    model.train_step(X)
    print(json.dumps({"compile_s": time.perf_counter() - t}))


def compile_seconds(name, cache_dir, mode="c"):
    """Compile seconds in a fresh process on the compile cache ``cache_dir`` (the C
    modules, and XLA's compilation cache inside it)."""
    env = dict(os.environ)
    env["VGSN_MODE"] = mode.upper()
    from vgsn.backend import NAME
    flag_var = NAME.upper() + "_FLAGS"
    env[flag_var] = ",".join(f for f in [env.get(flag_var, ""), f"base_compiledir={cache_dir}"] if f)
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(cache_dir, "jax_cache")
    out = subprocess.run([sys.executable, __file__, "--compile-only", name], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["compile_s"]


def step_seconds(name, steps, modes):
    """Median seconds per update of each mode, alternating update by update, each
    mode in its own worker process (``_backends.Worker``)."""
    workers = [_backends.Worker(__file__, m, [name]) for m in modes]
    try:
        for w in workers:
            w.ask("setup")
        times = _backends.alternate(workers, "step", steps)
        devices = {w.mode: w.ask("devices")["devices"] for w in workers}
    finally:
        for w in workers:
            w.close()
    return {m: float(np.median([t["s"] for t in ts])) for m, ts in times.items()}, devices


def worker(mode, name):
    """Child: one model for ``VGSN_MODE=mode``, timing one update per "step" request."""
    state = {}
    X = np.random.default_rng(0).random((ROWS, SIZES[name]["x_dim"])).astype(np.float32)

    def setup():
        state["model"] = _build(name)
        t = time.perf_counter()
        state["model"].train_step(X)                     # compile + first call
        return {"s": time.perf_counter() - t}

    def step():
        return {"s": _timed(state["model"].train_step, X)}

    _backends.serve({"setup": setup, "step": step, "devices": _backends.worker_devices})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None,
                        help="one or more of c, jax, numba, comma-separated (default: the "
                             "process's mode)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sizes", default="mnist1,mnist2", help="mnist1, mnist2 or both")
    parser.add_argument("--no-compile-timing", action="store_true",
                        help="skip the cold/warm compile subprocesses")
    parser.add_argument("--compile-only", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_only:
        compile_only(args.compile_only)
        return
    if args.worker:
        worker(*args.worker)
        return
    from vgsn.backend import MODE, NAME, config, library_version
    modes = _backends.parse(args.backend) if args.backend else [MODE]
    sizes = [s.strip() for s in args.sizes.split(",")]
    peaks = sgemm_peak()
    gpu = on_gpu()
    peak = peaks["xla"] if gpu else max(peaks.values())   # a GPU's yardstick is its own
    print(f"backend {NAME} {library_version}, blas {config.blas__ldflags!r}, {os.cpu_count()} cores;"
          f" load {_backends.load()}")
    print(f"SGEMM peak: numpy (host) {peaks['numpy']:.1f} GFLOP/s"
          + (f", XLA ({'device' if gpu else 'cpu'}) {peaks['xla']:.1f} GFLOP/s" if "xla" in peaks
             else ""))
    result = {}
    for name in sizes:
        for mode in modes if not args.no_compile_timing else []:
            with tempfile.TemporaryDirectory(prefix="vgsn-bench-cache-") as cache:
                cold = compile_seconds(name, cache, mode=mode)
                warm = compile_seconds(name, cache, mode=mode)
                print(f"{name} [{mode}]: compile + first update: cold {cold:.1f} s (empty "
                      f"caches), warm {warm:.1f} s (fresh process); load {_backends.load()}",
                      flush=True)
        secs, devices = step_seconds(name, args.steps, modes)
        if name == sizes[0]:
            print("devices: " + "; ".join(devices[m] for m in modes))
        products = floor_products(SIZES[name])
        timings = [] if gpu else [numpy_floor_alone(products)]
        kernel = timings[0]["kernel"] if timings else None
        timings = [t["seconds"] for t in timings]
        if "jax" in modes and MODE == "jax":
            timings.append(xla_per_product(products))
        floor_s, floor_gflop = floor_from(products, *timings)
        for mode in modes:
            s = secs[mode]
            gflops = update_flops(SIZES[name]) / s / 1e9
            ratio = gflops / peak
            print(f"{name} [{mode}]: {s * 1e3:.1f} ms per update (median of {args.steps}, "
                  f"alternating with the others), {update_flops(SIZES[name]) / 1e9:.2f} GFLOP -> {gflops:.1f} "
                  f"GFLOP/s, {ratio:.2f} of SGEMM peak; {s / floor_s:.2f}x the GEMM floor; "
                  f"{s / secs[modes[0]]:.2f}x {modes[0]}", flush=True)
            result[name, mode] = (s, ratio, floor_s / s)
        print(f"  GEMM floor (the same products alone, the faster per shape of "
              f"{'XLA on the device' if gpu else 'numpy (OpenBLAS ' + kernel + ')'}"
              f"{' and XLA' if len(timings) > 1 else ''}): {floor_s * 1e3:.1f} ms = "
              f"{floor_gflop / floor_s:.1f} GFLOP/s, {floor_gflop / floor_s / peak:.2f} of peak; "
              f"load {_backends.load()}", flush=True)
    first = modes[0]
    if set(sizes) == set(SIZES):
        s1, peak1, floor1 = result["mnist1", first]
        s2, peak2, floor2 = result["mnist2", first]
        # the four fields first, then the floor ratios (the docstring's line)
        print(_report.result_line([
            ("mnist1_s_per_update", s1, ".4f"), ("mnist1_peak_ratio", peak1, ".3f"),
            ("mnist2_s_per_update", s2, ".4f"), ("mnist2_peak_ratio", peak2, ".3f"),
            ("mnist1_floor_ratio", floor1, ".3f"), ("mnist2_floor_ratio", floor2, ".3f")]))
    ratios = _report.ratio_line({k: v[0] for k, v in result.items()}, sizes, modes)
    if ratios:
        print(ratios)


if __name__ == "__main__":
    main()
