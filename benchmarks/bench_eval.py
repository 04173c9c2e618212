"""Benchmark the GPDE (Gaussian Parzen density estimate) at the paper's size, numpy and JAX.

10,000 centres (model samples), 10,000 validation rows scored under 10 sigmas
(MNIST_SIGMAS), then 10,000 test rows under the chosen sigma, at 784 dims: the
whole ``vgsn.eval.bound.gpde`` call. The SGEMM (and DGEMM) peak of this machine
is measured in the same run, so the rate can be read against it.

Engines, side by side: numpy float64 (the exact default), numpy float32 (unless
``--no-float32``) and the JAX engine (``vgsn/parzen_jax.py``, float32 on jax's
device), each back-end in its own worker process (``benchmarks/_backends.py``:
XLA's spinning threads would slow numpy's BLAS in the same process), asked in turn
round by round, so a loaded machine slows them alike: read the ratios. The JAX
worker runs ``VGSN_MODE=JAX`` and ``engine='auto'``, the path a JAX-mode run's
evaluation takes; its compile (first call) is timed apart.

Work counted: the 10 sigmas share one distance matrix, so the GEMM work is two
products of 10k x 10k x 784 (validation and test): 2 * 2 * 1e4 * 1e4 * 784 =
0.31 TFLOP, and ``gpde_gflops`` is that divided by the total time. Recomputing
the distances for every sigma (as the 2014 GAN Parzen script did) would be 11
products, 1.7 TFLOP; the rate that would need is printed too, labelled as such.

Data: uniform random pixels in [0, 1] by default. Every distance is then close to
every other, the worst case for numpy's exponentials (at large sigmas no term is
negligible); ``--mnist DIR`` uses real MNIST rows instead (training rows as the
centres, validation and test rows), where numpy skips most terms. The JAX engine
computes every term either way.

    python benchmarks/bench_eval.py                  # numpy f64 / f32 and JAX, 2 rounds
    python benchmarks/bench_eval.py --quick          # 2,000 rows each, a smoke test
    python benchmarks/bench_eval.py --mnist ../shared/data/mnist

The last line is ``RESULT gpde_total_s=<s> gpde_gflops=<g> sgemm_peak_gflops=<g>
gpde_jax_s=<s> jax_over_numpy=<ratio> jax_device=<device>``: the first three for
the numpy float64 path (median over the rounds), then the JAX engine's median and
its ratio to numpy float64 (``nan`` / ``none`` when jax is not installed).
``--backend c,jax`` names the back-ends whose workers run (default both where jax
imports); numpy float64 always runs, as the reference.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _backends  # noqa: E402
from vgsn.eval.gpde import MNIST_SIGMAS, gpde  # noqa: E402
from vgsn.eval.parzen import parzen_gemm_flops  # noqa: E402


def gemm_peak(dtype, n=4096, repeats=5):
    """Best-of-``repeats`` GFLOP/s of an n x n x n numpy matmul."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n)).astype(dtype)
    b = rng.random((n, n)).astype(dtype)
    a @ b  # warm-up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def make_data(n, d, mnist=None):
    """(centres, X_valid, X_test), float32, the same in every worker."""
    if mnist:
        from vgsn.data.datasets import load_dataset
        data = load_dataset("mnist", mnist, download=False)
        if data.train.shape[1] != d:
            raise SystemExit(f"--mnist: rows have {data.train.shape[1]} dims, not --dims {d}")
        return (data.train[:n].astype(np.float32), data.valid[:n].astype(np.float32),
                data.test[:n].astype(np.float32))
    rng = np.random.default_rng(1)
    return tuple(rng.random((n, d), dtype=np.float32) for _ in range(3))


def worker(mode, n, d, mnist):
    """Child with ``VGSN_MODE=mode``: times one ``gpde`` call per request."""
    from vgsn import backend  # noqa: F401  (imported: engine='auto' reads its mode)
    from vgsn.eval.parzen import parzen_engine
    data = make_data(int(n), int(d), mnist or None)

    def run(variant):
        kwargs = {"engine": "auto"} if variant == "auto" else {"engine": "numpy",
                                                              "dtype": variant}
        t = time.perf_counter()
        res = gpde(*data, sigmas=MNIST_SIGMAS, **kwargs)
        return {"s": time.perf_counter() - t, "sigma": res["sigma"],
                "test_mean": res["test_mean"], "test_stderr": res["test_stderr"]}

    def setup():
        engine = parzen_engine("auto")
        out = {"engine": engine, "device": "cpu (numpy)"}
        if engine == "jax":
            from vgsn.eval import parzen_jax
            out["device"] = parzen_jax.device_name()
            # The block shapes of the full call (see parzen_jax.block_shape): one
            # compile for the 10 sigmas of the validation pass, one for the test pass.
            t = time.perf_counter()
            gpde(data[0][:2048], data[1][:1024], data[2][:1024], sigmas=MNIST_SIGMAS,
                 engine="auto")
            out["compile_s"] = time.perf_counter() - t
        return out

    _backends.serve({"setup": setup, "run": run, "devices": _backends.worker_devices})


def _jax_importable():
    try:
        import jax  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10000, help="centres, valid and test rows")
    ap.add_argument("--dims", type=int, default=784)
    ap.add_argument("--quick", action="store_true", help="2,000 rows each")
    ap.add_argument("--rounds", type=int, default=2, help="times each engine runs, in turn")
    ap.add_argument("--no-float32", action="store_true", help="skip the numpy float32 timing")
    ap.add_argument("--mnist", metavar="DIR", help="real MNIST rows from DIR (else uniform)")
    ap.add_argument("--backend", default=None,
                    help="back-ends whose GPDE ('auto' engine) to time, comma-separated: c "
                         "(numpy), jax (the JAX engine); default c,jax where jax imports")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return
    n = 2000 if args.quick else args.rows
    d = args.dims
    modes = _backends.parse(args.backend or ("c,jax" if _jax_importable() else "c"))
    with_jax = "jax" in modes

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, load average {load} "
          "(other processes slow every number below alike), "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}")
    sgemm = gemm_peak(np.float32)
    dgemm = gemm_peak(np.float64)
    print(f"peak: SGEMM {sgemm:.1f} GFLOP/s, DGEMM {dgemm:.1f} GFLOP/s (4096^3, best of 5)")
    flops = parzen_gemm_flops(n, n, d) * 2  # validation (all sigmas) + test
    nominal = parzen_gemm_flops(n, n, d) * (len(MNIST_SIGMAS) + 1)
    print(f"GPDE: {n} centres, {n} valid rows x {len(MNIST_SIGMAS)} sigmas, {n} test rows, "
          f"{d} dims ({'MNIST rows' if args.mnist else 'uniform pixels'}); GEMM work "
          f"{flops / 1e12:.3f} TFLOP (one product per sigma would be {nominal / 1e12:.2f} TFLOP)")

    # (label, worker mode, request): numpy in a C-mode worker, JAX in a JAX-mode one.
    variants = [("numpy float64", "c", "float64")]
    if not args.no_float32:
        variants.append(("numpy float32", "c", "float32"))
    if with_jax:
        variants.append(("jax float32", "jax", "auto"))
    wargs = [str(n), str(d), args.mnist or ""]
    workers = {m: _backends.Worker(__file__, m, wargs) for m in sorted({v[1] for v in variants})}
    times = {label: [] for label, _, _ in variants}
    try:
        info = {m: w.ask("setup") for m, w in workers.items()}
        if with_jax:
            j = info["jax"]
            if j["engine"] != "jax":
                raise SystemExit(f"the JAX worker's 'auto' engine is {j['engine']}, not jax")
            print(f"JAX engine on {j['device']} ({workers['jax'].ask('devices')['devices']}); "
                  f"compile + first small call {j['compile_s']:.1f} s")
        for r in range(args.rounds):
            for label, m, request in variants:
                times[label].append(workers[m].ask("run", variant=request))
            print(f"round {r + 1}: " + ", ".join(f"{lb} {times[lb][-1]['s']:.2f} s"
                                                 for lb, _, _ in variants)
                  + f"; load {_backends.load()}", flush=True)
    finally:
        for w in workers.values():
            w.close()

    med = {lb: float(np.median([t["s"] for t in ts])) for lb, ts in times.items()}
    ref = med["numpy float64"]
    for label, _, _ in variants:
        secs, last = med[label], times[label][-1]
        peak = dgemm if label == "numpy float64" else sgemm
        where = "" if label != "jax float32" or info["jax"]["device"] == "cpu" else \
            " (the host's peak: the device is not this CPU)"
        print(f"{label:14s}: {secs:7.2f} s (median of {args.rounds}), {secs / ref:.2f}x numpy "
              f"float64; {flops / secs / 1e9:6.1f} GFLOP/s of GEMM work "
              f"({100 * flops / secs / 1e9 / peak:.0f}% of its GEMM peak{where}; per-sigma-"
              f"recompute equivalent {nominal / secs / 1e9:.0f} GFLOP/s), "
              f"sigma={last['sigma']:.4f}, test {last['test_mean']:.4f} +- "
              f"{last['test_stderr']:.2f} nats")
    if with_jax:
        a, b = times["jax float32"][-1], times["numpy float64"][-1]
        print(f"jax vs numpy float64: same sigma {a['sigma'] == b['sigma']}, test means differ "
              f"by {abs(a['test_mean'] - b['test_mean']):.2e} nats (float32 distances)")
        jax_s, dev = med["jax float32"], info["jax"]["device"]
        jax_fields = (f"gpde_jax_s={jax_s:.2f} jax_over_numpy={jax_s / ref:.3f} "
                      f"jax_device={dev.replace(' (', ':').replace(')', '').replace(' ', '_')}")
    else:
        jax_fields = "gpde_jax_s=nan jax_over_numpy=nan jax_device=none"
    print(f"RESULT gpde_total_s={ref:.2f} gpde_gflops={flops / ref / 1e9:.1f} "
          f"sgemm_peak_gflops={sgemm:.1f} {jax_fields}")


if __name__ == "__main__":
    main()
