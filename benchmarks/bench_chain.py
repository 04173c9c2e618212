"""Benchmark the guided chain: one VCGLoop update, the bare unrolled chain, compile times.

What is timed
-------------
1. ``VCGLoop.train_step`` (the whole update: 6-step chain from 100 x 5 rows, the
   guide on [200 data rows; 6 x 500 chain outputs], both SGD updates, host noise)
   at the 2015 MNIST script's sizes (q/p 2 x 1000, z 50, Gaussian x) and at the
   paper's MNIST-1 sizes (2 x 1500, z 64, Bernoulli x); guide 300 x 4 maxout, 2 layers.
   Median seconds per update after two warm-up updates.
2. The bare chain (encode-sample-decode, T = 6, 500 rows, a cost on every step's
   state and free energy, gradients w.r.t. q/p only) in three builds of the SAME step:
   ``scan + stored BPTT`` (vgsn's default: ``bptt.chain_gradients``), ``scan + autodiff``
   (``grad`` through the scan) and ``python unroll + autodiff``. This is where scan's
   own overhead shows.
3. Compile seconds of ``train_step``, each in a child process: cold (fresh, empty
   caches: every C op compiled, or XLA's compilation cache empty) and warm (the same
   caches again: what a second run of a script pays), and warm for T = 2, 6, 12.

Work (GEMM FLOPs) is counted as 3 x the forward GEMMs (forward, and the two GEMMs of
the backward: dX and dW), chain and guide, the convention of the issue (~92 GFLOP
per update at the 2015 sizes); the machine's SGEMM peak is measured in the same run.
The machine is shared: the load average is printed next to the timings.

    python benchmarks/bench_chain.py            # everything (about 15 minutes)
    python benchmarks/bench_chain.py --quick    # fewer updates, no autodiff-scan build

Each size also gets its GEMM floor: the update's own products (same shapes) timed
alone, each shape at the faster of numpy's BLAS (in a fresh process with
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` unset; the OpenBLAS core that ran is
printed) and XLA's own dot (full float32, waited for, in the JAX worker: on a GPU the
device's, and then the only floor), the time no back-end can beat;
``floor_ratio`` = floor seconds / update seconds. Every update is timed in steady
state (after warm-up updates, its outputs fetched); the host noise of an update is
timed apart, after the timed updates, and its share of the update is printed for every
back-end. The yardstick peak is numpy's SGEMM on the host, or the device's own float32
peak (a large product, waited for) when JAX runs on a GPU.

``--backend c,jax`` (one or several) times every back-end, each in its own worker
process, alternating update by update (``benchmarks/_backends.py``); the compile
seconds of a back-end other than C are to the end of the first update in a fresh
process (XLA compiles on the first call). The first back-end named is the one the
``RESULT`` line reports; a ``RATIO`` line gives the others over it.

The last line is ``RESULT chain6_2015sizes_s_per_update=<s> chain6_mnist1_s_per_update=<s>
compile_cold_s=<s> compile_warm_s=<s> compile_T12_over_T2=<ratio>
chain6_2015sizes_floor_ratio=<r> chain6_mnist1_floor_ratio=<r>
chain6_2015sizes_noise_share=<r>``.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _backends  # noqa: E402
import _gemm  # noqa: E402
from _gemm import floor_from, numpy_floor_alone, sgemm_peak, xla_per_product  # noqa: E402

SIZES = {
    "2015": dict(x_dim=784, z_dim=50, hidden=1000, x_type="gaussian"),
    "mnist1": dict(x_dim=784, z_dim=64, hidden=1500, x_type="bernoulli"),
}
CHAIN_ROWS, REPEAT, DATA_ROWS, GUIDE_UNITS, GUIDE_POOL = 100, 5, 200, 300, 4


def update_gflop(size, steps=6):
    """3 x forward GEMM FLOPs of one update (chain + guide), in GFLOP."""
    s = SIZES[size]
    x, z, h = s["x_dim"], s["z_dim"], s["hidden"]
    rows = CHAIN_ROWS * REPEAT
    chain_macs = (x * h + h * h + h * 2 * z) + (z * h + h * h + h * x)   # q, then p
    g_rows = DATA_ROWS + steps * rows
    lin = GUIDE_UNITS * GUIDE_POOL
    guide_macs = x * lin + GUIDE_UNITS * lin + GUIDE_UNITS
    chain = 3 * 2 * chain_macs * rows * steps
    guide = 3 * 2 * guide_macs * g_rows
    return (chain + guide) / 1e9, chain / 1e9


def floor_products(size, steps=6):
    """The update's products for ``gemm_floor``, in the shapes vgsn runs them: per
    step (500 rows) the chain's forward and input-gradient products; the chain's
    weight gradients once over all steps' rows stacked; the guide's forward,
    weight- and input-gradient products on its stacked input."""
    s = SIZES[size]
    x, z, h = s["x_dim"], s["z_dim"], s["hidden"]
    rows = CHAIN_ROWS * REPEAT
    chain = [(x, h), (h, h), (h, z), (h, z), (z, h), (h, h), (h, x)]
    lin = GUIDE_UNITS * GUIDE_POOL
    guide = [(x, lin), (GUIDE_UNITS, lin), (GUIDE_UNITS, 1)]
    g_rows = DATA_ROWS + steps * rows
    out = []
    for a, b in chain:
        out += [(rows, a, b, steps), (rows, b, a, steps), (a, steps * rows, b, 1)]
    for a, b in guide:
        out += [(g_rows, a, b, 1), (g_rows, b, a, 1), (a, g_rows, b, 1)]
    return out


def load():
    try:
        return "%.1f" % os.getloadavg()[0]
    except OSError:
        return "?"


# ---- builders ----------------------------------------------------------------------
def make_loop(size, steps=6, bptt="stored", unroll="scan", seed=0):
    from vgsn.model.vae import OneStageModel
    from vgsn.model.vcg import VCGLoop
    from vgsn.model.nets import MaxoutGuide
    s = SIZES[size]
    model = OneStageModel(s["x_dim"], s["z_dim"], q_hidden=(s["hidden"],) * 2,
                          p_hidden=(s["hidden"],) * 2, x_type=s["x_type"], seed=seed)
    model.hyper.set(l2=1e-4)                               # the 2015 chain phase's decay
    guide = MaxoutGuide(model.x_dim, np.random.default_rng([seed, 2]), units=GUIDE_UNITS,
                        pool=GUIDE_POOL)
    return VCGLoop(model, guide, steps=steps, bptt=bptt, unroll=unroll, seed=seed)


def bare_chain_fn(size, variant, steps=6, mode=None):
    """Compiled f(x0, eps, R) -> gradients of a cost on every step, w.r.t. q/p."""
    from vgsn.model import bptt
    from vgsn.model import chain
    from vgsn.backend import T, function, grad
    from vgsn.model.vae import OneStageModel
    s = SIZES[size]
    model = OneStageModel(s["x_dim"], s["z_dim"], q_hidden=(s["hidden"],) * 2,
                          p_hidden=(s["hidden"],) * 2, x_type=s["x_type"], seed=0)
    x0, eps, R = T.matrix("x0"), T.tensor3("eps"), T.tensor3("R")
    unroll = "python" if variant == "python unroll + autodiff" else "scan"
    stored = variant == "scan + stored BPTT"
    fwd = chain.chain_forward(model, x0, eps, store=stored, unroll=unroll, steps=steps)
    cost = T.sum(fwd.states * R) + T.mean(fwd.nll) + T.mean(fwd.kl)
    if stored:
        g = grad(cost, [fwd.states, fwd.nll, fwd.kl])
        grads = bptt.chain_gradients(model, fwd, *g)
        outs = [grads[p] for p in model.params]
    else:
        outs = grad(cost, model.params)
    from vgsn.backend import compile_mode
    t = time.perf_counter()
    fn = function([x0, eps, R], outs, name="bare_chain", mode=compile_mode(mode=mode))
    return fn, time.perf_counter() - t, model


def time_bare(size, variant, updates, steps=6, mode=None):
    fn, compile_s, model = bare_chain_fn(size, variant, steps, mode)
    rng = np.random.default_rng(2)
    rows = CHAIN_ROWS * REPEAT
    x0 = rng.random((rows, model.x_dim), dtype=np.float32)
    eps = rng.standard_normal((steps, rows, model.z_dim), dtype=np.float32)
    R = rng.standard_normal((steps, rows, model.x_dim), dtype=np.float32)
    t = time.perf_counter()
    fn(x0, eps, R)                                  # JAX compiles with XLA here
    compile_s += time.perf_counter() - t
    times = []
    for _ in range(updates):
        t = time.perf_counter()
        fn(x0, eps, R)
        times.append(time.perf_counter() - t)
    return float(np.median(times)), compile_s


# ---- child processes (compile timings) ---------------------------------------------
def child_compile(size, steps):
    """Run in a child: build the loop and time ``compile`` and the first update (XLA
    compiles on the first call; the C update itself is well under a second)."""

    loop = make_loop(size, steps=steps)
    X = np.random.default_rng(1).random((CHAIN_ROWS + DATA_ROWS, loop.model.x_dim),
                                        dtype=np.float32)
    t = time.perf_counter()
    loop.compile(("train_step",))
    loop.train_step(X[:CHAIN_ROWS], X[CHAIN_ROWS:])
    print(json.dumps({"compile_s": time.perf_counter() - t}))


def run_child(size, steps, compiledir=None, mode="c"):
    """Compile seconds of ``train_step`` in a fresh process. ``compiledir``: the C module
    cache and XLA's compilation cache inside it (default: the user's)."""
    env = dict(os.environ)
    if compiledir is not None:
        from vgsn.backend import NAME
        key = NAME.upper() + "_FLAGS"
        env[key] = ",".join(f for f in [env.get(key, ""), f"base_compiledir={compiledir}"] if f)
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(compiledir, "jax_cache")
    env["VGSN_MODE"] = mode.upper()
    cmd = [sys.executable, os.path.abspath(__file__), "--child", size, str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)["compile_s"]
    raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")


def worker(mode, args_json):
    """Child for one back-end: builds loops and bare chains on request, times them."""
    state = {}
    rng = np.random.default_rng(1)
    X = rng.random((2000, 784), dtype=np.float32)

    def setup(size, unroll="scan", bptt="stored"):
        state.pop("loop", None)
        t = time.perf_counter()
        loop = state["loop"] = make_loop(size, bptt=bptt, unroll=unroll)
        loop.compile(("train_step",))
        loop.train_step(X[:CHAIN_ROWS], X[CHAIN_ROWS:CHAIN_ROWS + DATA_ROWS])   # + XLA
        c = time.perf_counter() - t
        loop.train_step(X[:CHAIN_ROWS], X[CHAIN_ROWS:CHAIN_ROWS + DATA_ROWS])
        return {"compile_s": c}

    def step():
        loop = state["loop"]
        a = int(rng.integers(0, 1800))
        t = time.perf_counter()
        loop.train_step(X[a:a + CHAIN_ROWS], X[a:a + DATA_ROWS])   # outputs fetched: done
        return {"s": time.perf_counter() - t}

    def noise(repeats=3):
        """The host noise of one update, timed alone after the timed updates (timing it
        between them would also cancel and redraw the noise drawn ahead)."""
        loop, times = state["loop"], []
        for _ in range(repeats):
            t = time.perf_counter()
            loop.draw_noise(CHAIN_ROWS * REPEAT, DATA_ROWS)
            times.append(time.perf_counter() - t)
        return {"s": float(np.median(times))}

    def xla_floor(products):
        """XLA's own dot on the update's shapes, on this worker's jax device."""
        got = xla_per_product([tuple(p) for p in products])
        return {"seconds": [[list(k), v] for k, v in got.items()]}

    def device():
        import jax
        d = jax.devices()[0]
        return {"platform": d.platform, "peak": _gemm.xla_peak() if d.platform != "cpu" else None}

    def bare(size, variant, updates):
        s, c = time_bare(size, variant, updates)
        return {"s": s, "compile_s": c}

    _backends.serve({"setup": setup, "step": step, "noise": noise, "bare": bare,
                     "xla_floor": xla_floor, "device": device,
                     "devices": _backends.worker_devices})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="c",
                    help="one or more of c, jax, numba, comma-separated (default c)")
    ap.add_argument("--quick", action="store_true",
                    help="3 updates each, skip the autodiff-scan builds")
    ap.add_argument("--updates", type=int, default=10, help="timed updates per configuration")
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold-cache compile")
    ap.add_argument("--skip-compile", action="store_true", help="skip every compile timing")
    ap.add_argument("--sizes", default="2015,mnist1", help="2015, mnist1 or both")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare-chain builds")
    ap.add_argument("--child", nargs=2, metavar=("SIZE", "STEPS"), help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_compile(args.child[0], int(args.child[1]))
        return
    if args.worker:
        worker(*args.worker)
        return
    modes = _backends.parse(args.backend)
    sizes = [s.strip() for s in args.sizes.split(",")]
    from vgsn.backend import NAME, library_version
    updates = 3 if args.quick else args.updates
    peak = sgemm_peak()
    print(f"{NAME} {library_version}; host SGEMM peak {peak:.0f} GFLOP/s (numpy float32, best "
          f"of 2048^3, 3000^3, 4096^3); load {load()}")
    cold = warm = ratio = float("nan")
    # 1. compile: cold (fresh caches) and warm (the same caches again), then warm for
    #    T = 2, 6, 12 (the user's caches)
    for mode in modes if not args.skip_compile else []:
        with tempfile.TemporaryDirectory(prefix="vgsn_cold_") as d:
            c = float("nan") if args.skip_cold else run_child("2015", 6, d, mode=mode)
            wm = run_child("2015", 6, None if args.skip_cold else d, mode=mode)
        by_t = {t: run_child("2015", t, mode=mode) for t in (2, 6, 12)}
        print(f"\ntrain_step compile + first update [{mode}] (2015 sizes, T=6): cold {c:.1f} s "
              f"(empty caches), warm {wm:.1f} s (fresh process); load {load()}")
        print("  warm: " + ", ".join(f"T={t}: {v:.1f} s" for t, v in by_t.items())
              + f"; T=12 / T=2: {by_t[12] / by_t[2]:.2f}")
        if mode == modes[0]:
            cold, warm, ratio = c, wm, by_t[12] / by_t[2]

    # 2. one update of the guided chain, every back-end in its own worker, alternating
    workers = [_backends.Worker(__file__, m, ["{}"]) for m in modes]
    per_update, floors, shares = {}, {}, {}
    try:
        print("\ndevices: " + "; ".join(w.ask("devices")["devices"] for w in workers))
        jax_worker = next((w for w in workers if w.mode == "jax"), None)
        on_gpu = False
        if jax_worker is not None:
            dev = jax_worker.ask("device")
            on_gpu = dev["platform"] != "cpu"
            if on_gpu:   # the yardstick is the device's, never the host's BLAS
                peak = dev["peak"]
                print(f"device float32 peak {peak:.0f} GFLOP/s (4096^3, full precision, "
                      f"waited for): the 'of peak' column below")
        print(f"\n{'sizes':8s} {'back-end':8s} {'build':24s} {'s/update':>9s} {'GFLOP':>6s} "
              f"{'GFLOP/s':>8s} {'of peak':>8s} {'noise s':>8s} {'noise %':>7s} "
              f"{'compile s':>9s}")
        variants = [("scan", "stored")]
        if not args.quick:
            variants += [("python", "autodiff")]
        for size in sizes:
            gflop, _ = update_gflop(size)
            for unroll, bptt in (variants if size == "2015" else variants[:1]):
                compiled = {w.mode: w.ask("setup", size=size, unroll=unroll, bptt=bptt)["compile_s"]
                            for w in workers}
                got = _backends.alternate(workers, "step", updates)
                noise = {w.mode: w.ask("noise")["s"] for w in workers}
                label = f"{unroll} + {bptt} BPTT" if bptt == "stored" else f"{unroll} + autodiff"
                for m in modes:
                    s = float(np.median([g["s"] for g in got[m]]))
                    if (unroll, bptt) == ("scan", "stored"):
                        per_update[size, m] = s
                        shares[size, m] = noise[m] / s
                    print(f"{size:8s} {m:8s} {label:24s} {s:9.3f} {gflop:6.1f} {gflop / s:8.1f} "
                          f"{gflop / s / peak:8.2f} {noise[m]:8.3f} {100 * noise[m] / s:6.1f}% "
                          f"{compiled[m]:9.1f}   (load {load()})", flush=True)
            products = floor_products(size)
            timings, parts = [], []
            if not on_gpu:      # the host's BLAS is no floor for a GPU
                blas = numpy_floor_alone(products)
                timings.append(blas["seconds"])
                parts.append(f"numpy {floor_from(products, blas['seconds'])[0]:.3f} s "
                             f"(OpenBLAS kernel {blas['kernel']})")
            if jax_worker is not None:
                xla = {tuple(k): v for k, v in jax_worker.ask(
                    "xla_floor", products=products)["seconds"]}
                timings.append(xla)
                parts.append(f"XLA {floor_from(products, xla)[0]:.3f} s "
                             f"({'device' if on_gpu else 'cpu'})")
            floor_s, _ = floor_from(products, *timings)
            for m in modes:
                floors[size, m] = floor_s / per_update[size, m]
            print(f"{size:8s} {'floor':8s} {'GEMM floor':24s} {floor_s:9.3f} {gflop:6.1f} "
                  f"{gflop / floor_s:8.1f} {gflop / floor_s / peak:8.2f}   (the faster per "
                  f"shape of: {'; '.join(parts)}; the update takes "
                  + ", ".join(f"{m} {per_update[size, m] / floor_s:.2f}x" for m in modes)
                  + " the floor)", flush=True)

        # 3. the bare chain: scan's overhead against a Python unroll of the same step
        if not args.no_bare:
            print("\nbare 6-step chain with BPTT (500 rows, gradients w.r.t. q/p only)")
            print(f"{'sizes':8s} {'back-end':8s} {'build':28s} {'s/call':>9s} {'GFLOP':>6s} "
                  f"{'GFLOP/s':>8s} {'compile s':>9s}")
            bare = ["scan + stored BPTT", "python unroll + autodiff"]
            if not args.quick:
                bare.append("scan + autodiff")
            for size in sizes:
                _, chain_gflop = update_gflop(size)
                for variant in bare:
                    for w in workers:
                        got = w.ask("bare", size=size, variant=variant, updates=updates)
                        print(f"{size:8s} {w.mode:8s} {variant:28s} {got['s']:9.3f} "
                              f"{chain_gflop:6.1f} {chain_gflop / got['s']:8.1f} "
                              f"{got['compile_s']:9.1f}   (load {load()})", flush=True)
    finally:
        for w in workers:
            w.close()

    from _report import ratio_line, result_line   # shared with bench_vae.py
    first = modes[0]
    if set(sizes) == set(SIZES):
        print("\n" + result_line([
            ("chain6_2015sizes_s_per_update", per_update["2015", first], ".3f"),
            ("chain6_mnist1_s_per_update", per_update["mnist1", first], ".3f"),
            ("compile_cold_s", cold, ".1f"), ("compile_warm_s", warm, ".1f"),
            ("compile_T12_over_T2", ratio, ".2f"),
            ("chain6_2015sizes_floor_ratio", floors["2015", first], ".2f"),
            ("chain6_mnist1_floor_ratio", floors["mnist1", first], ".2f"),
            ("chain6_2015sizes_noise_share", shares["2015", first], ".3f")]))
    ratios = ratio_line(per_update, sizes, modes)
    if ratios:
        print(ratios)


if __name__ == "__main__":
    main()
