"""Speed of one OneStageModel ``train_step`` at the paper's MNIST sizes.

Prints, for MNIST-1 (784-1500-1500-64, Bernoulli) and MNIST-2 (784-1000-1000-50,
Gaussian), batch 100 rows x 5 samples = 500: compile seconds with a cold cache,
with the C modules cached but the graph rewritten, and warm (the rewritten graph
cached too, ``vgsn/graphcache.py``), each in a fresh subprocess on an empty
temporary cache; the median seconds per update, GFLOP/s, and the ratio to this
machine's SGEMM peak measured in the same run. It also prints the update's GEMM
floor: the same matrix products timed alone in numpy (``benchmarks/_gemm.py``),
so one can read how much of the update is overhead and how far the product
shapes themselves are from the square-matrix peak. The last line is
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
from _gemm import gemm_floor, mlp_products, sgemm_peak as numpy_peak  # noqa: E402


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


def sgemm_peak(n=3000, repeats=5):
    """Best float32 GEMM rate (GFLOP/s) of numpy's BLAS (best of 2048, 3000 and
    4096 squared, ``_gemm.sgemm_peak``) and of the backend's (n squared)."""
    from vgsn.backend import T, function
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    x, y = T.matrix(), T.matrix()
    backend_dot = function([x, y], T.dot(x, y))
    backend_dot(a, a)
    best = min(_timed(backend_dot, a, a) for _ in range(repeats))
    return {"numpy": numpy_peak(repeats=repeats), "backend": 2 * n ** 3 / best / 1e9}


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


def compile_seconds(name, cache_dir, graph_cache=True, mode="c"):
    """Compile seconds in a fresh process on the compile cache ``cache_dir`` (its
    rewritten-graph cache inside it; ``graph_cache=False``: rewrite as without one)."""
    env = dict(os.environ)
    env.pop("VGSN_GRAPH_CACHE_DIR", None)
    env["VGSN_MODE"] = mode.upper()
    env["VGSN_GRAPH_CACHE"] = "1" if graph_cache else "0"
    from vgsn.backend import NAME
    flag_var = NAME.upper() + "_FLAGS"
    env[flag_var] = ",".join(f for f in [env.get(flag_var, ""), f"base_compiledir={cache_dir}"] if f)
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
    peak = max(peaks.values())
    print(f"backend {NAME} {library_version}, blas {config.blas__ldflags!r}, {os.cpu_count()} cores;"
          f" load {_backends.load()}")
    print(f"SGEMM peak: numpy {peaks['numpy']:.1f} GFLOP/s, backend {peaks['backend']:.1f} GFLOP/s")
    result = {}
    for name in sizes:
        for mode in modes if not args.no_compile_timing else []:
            with tempfile.TemporaryDirectory(prefix="vgsn-bench-cache-") as cache:
                cold = compile_seconds(name, cache, mode=mode)
                if mode == "c":
                    rewrite = compile_seconds(name, cache, graph_cache=False)
                    warm = compile_seconds(name, cache)
                    print(f"{name} [{mode}]: compile + first update: cold {cold:.1f} s, C modules "
                          f"cached {rewrite:.1f} s, warm {warm:.1f} s (rewritten graph cached "
                          f"too); load {_backends.load()}", flush=True)
                else:
                    print(f"{name} [{mode}]: compile + first update: cold {cold:.1f} s (fresh "
                          f"process); load {_backends.load()}", flush=True)
        secs, devices = step_seconds(name, args.steps, modes)
        if name == sizes[0]:
            print("devices: " + "; ".join(devices[m] for m in modes))
        floor_s, floor_gflop = gemm_floor(floor_products(SIZES[name]))
        for mode in modes:
            s = secs[mode]
            gflops = update_flops(SIZES[name]) / s / 1e9
            ratio = gflops / peak
            print(f"{name} [{mode}]: {s * 1e3:.1f} ms per update (median of {args.steps}, "
                  f"alternating with the others), {update_flops(SIZES[name]) / 1e9:.2f} GFLOP -> {gflops:.1f} "
                  f"GFLOP/s, {ratio:.2f} of SGEMM peak; {s / floor_s:.2f}x the GEMM floor; "
                  f"{s / secs[modes[0]]:.2f}x {modes[0]}", flush=True)
            result[name, mode] = (s, ratio, floor_s / s)
        print(f"  GEMM floor (the same products alone, numpy): {floor_s * 1e3:.1f} ms = "
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
