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
   caches: every C op is compiled), "rewritten" (C modules cached, the graph rewritten
   as if vgsn kept no graphs) and warm (the rewritten graph cached too, see
   ``vgsn/graphcache.py``: what a second run of a script pays), and both warm figures
   for T = 2, 6, 12.

Work (GEMM FLOPs) is counted as 3 x the forward GEMMs (forward, and the two GEMMs of
the backward: dX and dW), chain and guide, the convention of the issue (~92 GFLOP
per update at the 2015 sizes); the machine's SGEMM peak is measured in the same run.
The machine is shared: the load average is printed next to the timings.

    python benchmarks/bench_chain.py            # everything (about 15 minutes)
    python benchmarks/bench_chain.py --quick    # fewer updates, no autodiff-scan build

Each size also gets its GEMM floor: the update's own products (same shapes) timed
alone in numpy (``benchmarks/_gemm.py``), the time no backend can beat on this
machine; ``floor_ratio`` = floor seconds / update seconds.

``--backend c,jax`` (one or several) times every back-end, each in its own worker
process, alternating update by update (``benchmarks/_backends.py``); the compile
seconds of a back-end other than C are to the end of the first update in a fresh
process (XLA compiles on the first call). The first back-end named is the one the
``RESULT`` line reports; a ``RATIO`` line gives the others over it.

The last line is ``RESULT chain6_2015sizes_s_per_update=<s> chain6_mnist1_s_per_update=<s>
compile_cold_s=<s> compile_warm_s=<s> compile_T12_over_T2=<ratio> compile_rewrite_s=<s>
chain6_2015sizes_floor_ratio=<r> chain6_mnist1_floor_ratio=<r>`` (the T ratio is of the
rewritten compiles: the graph's size, not the cache, is what it measures).
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
from _gemm import gemm_floor, sgemm_peak  # noqa: E402

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


def time_loop(loop, updates):
    """(median s per train_step, median s of the host noise draw alone)."""
    rng = np.random.default_rng(1)
    X = rng.random((2000, loop.model.x_dim), dtype=np.float32)
    for _ in range(2):
        loop.train_step(X[:CHAIN_ROWS], X[CHAIN_ROWS:CHAIN_ROWS + DATA_ROWS])
    times = []
    for i in range(updates):
        a = rng.integers(0, 1800)
        t = time.perf_counter()
        loop.train_step(X[a:a + CHAIN_ROWS], X[a:a + DATA_ROWS])
        times.append(time.perf_counter() - t)
    noise = []
    for _ in range(3):
        t = time.perf_counter()
        loop.draw_noise(CHAIN_ROWS * REPEAT, DATA_ROWS)
        noise.append(time.perf_counter() - t)
    return float(np.median(times)), float(np.median(noise))


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


def run_child(size, steps, compiledir=None, graph_dir=None, graph_cache=True, expect_hit=None,
              mode="c"):
    """Compile seconds of ``train_step`` in a fresh process. ``compiledir``: the C module
    cache (default: the user's); ``graph_dir``: the rewritten-graph cache (default: inside
    the compiledir); ``graph_cache=False`` rewrites as if there were none."""
    env = dict(os.environ)
    env.pop("VGSN_GRAPH_CACHE_DIR", None)
    if compiledir is not None:
        from vgsn.backend import NAME
        key = NAME.upper() + "_FLAGS"
        env[key] = ",".join(f for f in [env.get(key, ""), f"base_compiledir={compiledir}"] if f)
    if graph_dir is not None:
        env["VGSN_GRAPH_CACHE_DIR"] = graph_dir
    env["VGSN_GRAPH_CACHE"] = "1" if graph_cache else "0"
    env["VGSN_MODE"] = mode.upper()
    cmd = [sys.executable, os.path.abspath(__file__), "--child", size, str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            got = json.loads(line)
            if expect_hit is not None and got["graph_cache_hit"] != expect_hit:
                raise RuntimeError(f"expected a graph-cache {'hit' if expect_hit else 'miss'}")
            return got["compile_s"]
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
        loop.train_step(X[a:a + CHAIN_ROWS], X[a:a + DATA_ROWS])
        s = time.perf_counter() - t
        t = time.perf_counter()
        loop.draw_noise(CHAIN_ROWS * REPEAT, DATA_ROWS)
        return {"s": s, "noise": time.perf_counter() - t}

    def bare(size, variant, updates):
        s, c = time_bare(size, variant, updates)
        return {"s": s, "compile_s": c}

    _backends.serve({"setup": setup, "step": step, "bare": bare,
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
    print(f"{NAME} {library_version}; SGEMM peak {peak:.0f} GFLOP/s (numpy float32, best of "
          f"2048^3, 3000^3, 4096^3); load {load()}")
    cold = warm = rewrite = ratio = float("nan")
    # 1. compile: cold (fresh caches), warm C modules but graph rewritten, fully warm;
    #    then the same for T = 2, 6, 12 (a fresh graph cache, the user's C module cache)
    for mode in modes if not args.skip_compile else []:
        if mode != "c":
            with tempfile.TemporaryDirectory(prefix="vgsn_cold_") as d:
                c = run_child("2015", 6, d, graph_dir=d, mode=mode)
            print(f"\ntrain_step compile + first update [{mode}] (2015 sizes, T=6): cold "
                  f"{c:.1f} s (fresh process); load {load()}")
            if mode == modes[0]:
                cold = c
            by_t = {t: run_child("2015", t, mode=mode) for t in (2, 6, 12)}
            print("  " + ", ".join(f"T={t}: {v:.1f} s" for t, v in by_t.items())
                  + f"; T=12 / T=2: {by_t[12] / by_t[2]:.2f}")
            continue
        with tempfile.TemporaryDirectory(prefix="vgsn_cold_") as d:
            if args.skip_cold:
                c = float("nan")
                run_child("2015", 6, graph_dir=d)
            else:
                c = run_child("2015", 6, d, graph_dir=d, expect_hit=False)
            rw = run_child("2015", 6, None if args.skip_cold else d, graph_dir=d,
                           graph_cache=False)
            wm = run_child("2015", 6, None if args.skip_cold else d, graph_dir=d,
                           expect_hit=True)
        print(f"\ntrain_step compile + first update [c] (2015 sizes, T=6): cold {c:.1f} s "
              f"(empty caches); C modules cached {rw:.1f} s (graph rewritten); warm {wm:.1f} s "
              f"(rewritten graph cached too); load {load()}")
        by_t, by_t_rewrite = {}, {}
        with tempfile.TemporaryDirectory(prefix="vgsn_graphs_") as g:
            for steps in (2, 6, 12):
                by_t_rewrite[steps] = run_child("2015", steps, graph_dir=g, expect_hit=False)
                by_t[steps] = run_child("2015", steps, graph_dir=g, expect_hit=True)
                print(f"  T={steps:2d}: rewritten {by_t_rewrite[steps]:.1f} s, warm "
                      f"{by_t[steps]:.1f} s")
        r = by_t_rewrite[12] / by_t_rewrite[2]
        print(f"  T=12 / T=2: {r:.2f} rewritten, {by_t[12] / by_t[2]:.2f} warm")
        if mode == modes[0]:
            cold, rewrite, warm, ratio = c, rw, wm, r

    # 2. one update of the guided chain, every back-end in its own worker, alternating
    workers = [_backends.Worker(__file__, m, ["{}"]) for m in modes]
    per_update, floors = {}, {}
    try:
        print("\ndevices: " + "; ".join(w.ask("devices")["devices"] for w in workers))
        print(f"\n{'sizes':8s} {'back-end':8s} {'build':24s} {'s/update':>9s} {'GFLOP':>6s} "
              f"{'GFLOP/s':>8s} {'of peak':>8s} {'noise s':>8s} {'compile s':>9s}")
        variants = [("scan", "stored")]
        if not args.quick:
            variants += [("python", "autodiff")]
        for size in sizes:
            gflop, _ = update_gflop(size)
            for unroll, bptt in (variants if size == "2015" else variants[:1]):
                compiled = {w.mode: w.ask("setup", size=size, unroll=unroll, bptt=bptt)["compile_s"]
                            for w in workers}
                got = _backends.alternate(workers, "step", updates)
                label = f"{unroll} + {bptt} BPTT" if bptt == "stored" else f"{unroll} + autodiff"
                for m in modes:
                    s = float(np.median([g["s"] for g in got[m]]))
                    noise = float(np.median([g["noise"] for g in got[m]]))
                    if (unroll, bptt) == ("scan", "stored"):
                        per_update[size, m] = s
                    print(f"{size:8s} {m:8s} {label:24s} {s:9.3f} {gflop:6.1f} {gflop / s:8.1f} "
                          f"{gflop / s / peak:8.2f} {noise:8.3f} {compiled[m]:9.1f}   "
                          f"(load {load()})", flush=True)
            floor_s, _ = gemm_floor(floor_products(size))
            for m in modes:
                floors[size, m] = floor_s / per_update[size, m]
            print(f"{size:8s} {'numpy':8s} {'GEMM floor':24s} {floor_s:9.3f} {gflop:6.1f} "
                  f"{gflop / floor_s:8.1f} {gflop / floor_s / peak:8.2f}   (the update takes "
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
            ("compile_T12_over_T2", ratio, ".2f"), ("compile_rewrite_s", rewrite, ".1f"),
            ("chain6_2015sizes_floor_ratio", floors["2015", first], ".2f"),
            ("chain6_mnist1_floor_ratio", floors["mnist1", first], ".2f")]))
    ratios = ratio_line(per_update, sizes, modes)
    if ratios:
        print(ratios)


if __name__ == "__main__":
    main()
