"""The GPU check's stages, most important first, each written to ``OUT/gpu_check.json``
as soon as it ends (``benchmarks/gpu_check.sh`` prepares the environment and runs this).

Stages and their keys in ``gpu_check.json``:

1. ``device``: jax's devices and ``vgsn.backend.describe()``; no GPU is a failure unless
   ``GPU_CHECK_ALLOW_CPU=1`` (a dry run of the script on a CPU).
2. ``matmul_precision``: jax's ``jax_default_matmul_precision`` once vgsn's JAX mode has
   started; anything but ``highest`` is a failure.
3. ``agree_max_rel``: three guided updates from a reference file computed on a CPU in
   the C mode (``--make-reference``, carried in as ``data/gpu_check_ref.npz``), run here in
   the JAX mode from the same parameters and the same host noise; the largest
   ``|jax - c| / max(|c|, 1)`` over every output of the three updates (relative for
   values above 1, absolute below). Above 2e-5 is a failure.
4. ``guided_ms``: the guided 6-step update at the 2015 sizes, steady state (after warm-up
   updates; every update's outputs are fetched, so the device has finished), median
   milliseconds at full float32 (``highest``) and at ``tf32``, with the host noise's
   share of an update and the device's own float32 peak (a large product, waited for).
5. ``bit_identical_two_processes``: the same three updates in two fresh processes, each
   with an empty XLA compilation cache (so each compiles, and autotunes, anew); false when
   any output or parameter differs in a bit.
6. ``paper_run``: ``mnist2-ork`` for the time left (stopped with SIGINT, its last
   checkpoint kept) in ``OUT/paper_run``; when ``GPU_CHECK_RUN`` (default
   ``data/gpu_check_run``) holds the folder a previous call brought back, it is resumed.

``GPU_CHECK_TINY=1``: tiny sizes and the ``tiny`` preset (a dry run in minutes; the
reference is then made on the spot). ``GPU_CHECK_ONLY=a,b``: only those stages.
``GPU_CHECK_FAIL=<stage>``: that stage fails on purpose (to test that a failure makes the
script exit non-zero). The exit status is 0 when every stage passed, 1 when one failed,
2 for an unknown stage name.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TINY = os.environ.get("GPU_CHECK_TINY") == "1"
#: (x_dim, z_dim, hidden, x_type, chain starts, repeat, data rows, guide units, pool)
SIZES = {"2015": (784, 50, 1000, "gaussian", 100, 5, 200, 300, 4),
         "tiny": (64, 4, 32, "gaussian", 6, 2, 10, 8, 2)}
SIZE = "tiny" if TINY else "2015"
AGREE_LIMIT = 2e-5
REF_UPDATES = 3


def make_loop(size=SIZE, seed=0):
    """The guided loop of ``size`` (6 steps) from ``seed``, as bench_chain builds it."""
    from vgsn.model.nets import MaxoutGuide
    from vgsn.model.vae import OneStageModel
    from vgsn.model.vcg import VCGLoop
    x, z, h, x_type, _, repeat, _, units, pool = SIZES[size]
    model = OneStageModel(x, z, q_hidden=(h, h), p_hidden=(h, h), x_type=x_type,
                          batch_repeat=repeat, seed=seed)
    model.hyper.set(l2=1e-4)
    guide = MaxoutGuide(x, np.random.default_rng([seed, 2]), units=units, pool=pool)
    return VCGLoop(model, guide, steps=6, momentum=0.5, seed=seed)


def batch(size=SIZE):
    """(X0, X_data): the chain starts and data rows every reference update uses."""
    x, _, _, _, starts, _, rows, _, _ = SIZES[size]
    X = np.random.default_rng(7).random((starts + rows, x), dtype=np.float32)
    return X[:starts], X[starts:]


def digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def three_updates(size=SIZE):
    """The outputs (updates x outputs) of three guided updates, the final state, and the
    digests of the starting state and of the first update's noise."""
    loop = make_loop(size)
    X0, Xd = batch(size)
    state0 = loop.get_state()
    start = digest(state0[k] for k in sorted(state0))
    rows = []
    for _ in range(REF_UPDATES):
        out = loop.train_step(X0, Xd)
        rows.append([out[k] for k in sorted(out) if not k.endswith("_steps")]
                    + list(out["nll_steps"]) + list(out["kl_steps"]))
    state = loop.get_state()
    loop2 = make_loop(size)
    eps, noise = loop2.draw_noise(X0.shape[0] * loop2.model.batch_repeat, Xd.shape[0])
    return np.array(rows, np.float64), state, start, digest([eps, *noise])


def make_reference(path, size=SIZE):
    """Run in the C mode: write the three updates' outputs and digests to ``path``."""
    from vgsn import backend
    if backend.MODE != "c":
        raise SystemExit(f"--make-reference runs in the C mode (VGSN_MODE=C), not {backend.MODE}")
    rows, _, start, noise = three_updates(size)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, outputs=rows, start=start, noise=noise, size=size,
             made_with=backend.describe())
    print(f"reference: {path} ({size} sizes, {backend.describe()})")


# ---- stages ----------------------------------------------------------------------
def stage_device(ctx):
    import jax
    from vgsn import backend
    devs = jax.devices()
    gpu = [d for d in devs if d.platform == "gpu"]
    if not gpu and os.environ.get("GPU_CHECK_ALLOW_CPU") != "1":
        raise RuntimeError("jax sees no GPU (CPU only): check the CUDA 12 wheels and driver")
    return {"jax": jax.__version__, "devices": [str(d) for d in devs],
            "kind": (gpu[0].device_kind if gpu else "cpu"), "describe": backend.describe()}


def stage_matmul_precision(ctx):
    from vgsn import backend
    got = backend.numerics()["matmul_precision"]
    ctx["record"]["xla_flags"] = backend.numerics()["xla_flags"]
    if got != "highest":
        raise RuntimeError(f"matmul precision {got}, not highest")
    return got


def stage_agree(ctx):
    ref_path = Path(ctx["ref"])
    if not ref_path.exists():
        if not TINY:
            raise RuntimeError(f"no reference {ref_path}: make it on a CPU with VGSN_MODE=C "
                               f"python benchmarks/gpu_check.py --make-reference {ref_path}")
        env = dict(os.environ, VGSN_MODE="C")
        subprocess.run([sys.executable, __file__, "--make-reference", str(ref_path)], env=env,
                       check=True, cwd=ROOT, timeout=600)
    ref = np.load(ref_path)
    if str(ref["size"]) != SIZE:
        raise RuntimeError(f"{ref_path} holds {ref['size']} sizes, this check runs {SIZE}")
    rows, _, start, noise = three_updates()
    if str(ref["start"]) != start or str(ref["noise"]) != noise:
        raise RuntimeError("the starting parameters or the noise differ from the reference's "
                           "(numpy draws differently here?): the comparison would be void")
    want = ref["outputs"]
    rel = float(np.max(np.abs(rows - want) / np.maximum(np.abs(want), 1.0)))
    ctx["record"]["agree_reference"] = str(ref["made_with"])
    if not rel <= AGREE_LIMIT:
        raise RuntimeError(f"max relative difference {rel:.3g} > {AGREE_LIMIT}", rel)
    return rel


def _time_updates(loop, n, warm=3):
    """Median seconds of an update (steady state) and of its host noise draw alone."""
    X0, Xd = batch()
    for _ in range(warm):
        loop.train_step(X0, Xd)               # outputs fetched: the device has finished
    times, noise = [], []
    for _ in range(n):
        t = time.perf_counter()
        loop.train_step(X0, Xd)
        times.append(time.perf_counter() - t)
    for _ in range(min(n, 5)):
        t = time.perf_counter()
        loop.draw_noise(X0.shape[0] * loop.model.batch_repeat, Xd.shape[0])
        noise.append(time.perf_counter() - t)
    return float(np.median(times)), float(np.median(noise))


def device_peak_gflops(n=None, repeats=5):
    """The device's float32 product rate (full precision), each product waited for."""
    import jax
    import jax.numpy as jnp
    n = n or (256 if TINY else 8192)
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: jnp.dot(a, a, precision=jax.lax.Precision.HIGHEST))
    f(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def stage_guided_ms(ctx):
    from vgsn import backend
    n = 5 if TINY else 30
    out = {}
    for precision in ("highest", "tf32"):
        backend.set_matmul_precision(precision)
        try:
            s, noise = _time_updates(make_loop(), n)
        finally:
            backend.set_matmul_precision("highest")
        out[precision] = round(1e3 * s, 3)
        out[f"{precision}_noise_share"] = round(noise / s, 3)
    out["host_noise_ms"] = round(1e3 * noise, 3)
    out["device_peak_gflops"] = round(device_peak_gflops(), 1)
    out["sizes"] = SIZE
    return out


def bit_probe():
    """In a child: three updates, then one line with the digest of outputs and state."""
    rows, state, _, _ = three_updates()
    print("@@" + digest([rows] + [state[k] for k in sorted(state)]))


def stage_bit_identical(ctx):
    digests = []
    for i in range(2):
        with tempfile.TemporaryDirectory(prefix="vgsn_xla_") as cache:
            env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
            res = subprocess.run([sys.executable, __file__, "--bit-probe"], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=ctx["left"]())
        lines = [ln[2:] for ln in res.stdout.splitlines() if ln.startswith("@@")]
        if res.returncode != 0 or not lines:
            raise RuntimeError(f"process {i + 1} failed ({res.returncode}): {res.stderr[-500:]}")
        digests.append(lines[-1])
    ctx["record"]["bit_digests"] = digests
    if digests[0] != digests[1]:
        raise RuntimeError("two processes computed different bits", False)
    return True


def _checkpoint_update(folder):
    from vgsn.run.checkpoints import load_run_checkpoint
    ckpt = Path(folder) / "checkpoint.h5"
    if not ckpt.exists():
        return 0, None
    _, meta = load_run_checkpoint(ckpt)
    c = meta["config"]
    return meta["update"], c["pretrain_updates"] + c["chain_updates"]


def _link_recorded_data_dir(folder):
    """A run records its data folder as an absolute path; a later device call may hold
    this checkout elsewhere: that path then becomes a link to this checkout's data/."""
    from vgsn.run.checkpoints import load_run_checkpoint
    _, meta = load_run_checkpoint(Path(folder) / "checkpoint.h5")
    recorded = meta.get("data_dir")
    if not recorded or Path(recorded).exists() or TINY:
        return None
    Path(recorded).parent.mkdir(parents=True, exist_ok=True)
    Path(recorded).symlink_to(ROOT / "data", target_is_directory=True)
    return recorded


def stage_paper_run(ctx):
    folder = Path(ctx["out"]) / "paper_run"
    carried = Path(os.environ.get("GPU_CHECK_RUN", ROOT / "data" / "gpu_check_run"))
    if not folder.exists() and (carried / "checkpoint.h5").exists():
        shutil.copytree(carried, folder)
    linked = None
    if (folder / "checkpoint.h5").exists():
        argv = ["--resume", str(folder)]
        linked = _link_recorded_data_dir(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        argv = (["--preset", "tiny"] if TINY else
                ["--preset", "mnist2-ork", "--data-dir", str(ROOT / "data"),
                 "--dataset", "mnist", "--checkpoint-every", "1000"])
        if not TINY and not (ROOT / "data" / "train-images-idx3-ubyte.gz").exists():
            raise RuntimeError("no MNIST in data/ (this machine cannot download it): "
                               "bash benchmarks/gpu_wheels.sh PYTHON MNIST_DIR first")
        argv += ["--out", str(folder), "--no-figures", "--backend", "jax"]
    before, _ = _checkpoint_update(folder)
    seconds = max(ctx["left"]() - 15, 60 if TINY else 0)   # a dry run always gets a minute
    if seconds < 30:
        raise RuntimeError(f"only {seconds:.0f} s left: not started")
    t = time.time()
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_mnist.py"), *argv, "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        log, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)          # the run stops with its last checkpoint
        log, _ = proc.communicate(timeout=120)
    (Path(ctx["out"]) / "paper_run.txt").write_text(log or "")
    update, total = _checkpoint_update(folder)
    result = {"folder": str(folder), "argv": argv, "data_dir_linked": linked, "from_update": before, "update": update,
              "total": total, "seconds": round(time.time() - t, 1), "returncode": proc.returncode,
              "finished": proc.returncode == 0}
    if proc.returncode not in (0, 130) or update is None:
        raise RuntimeError(f"run_mnist.py exited {proc.returncode}: {(log or '')[-400:]}",
                           result)
    return result


STAGES = [("device", stage_device), ("matmul_precision", stage_matmul_precision),
          ("agree_max_rel", stage_agree), ("guided_ms", stage_guided_ms),
          ("bit_identical_two_processes", stage_bit_identical), ("paper_run", stage_paper_run)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/vgsn-gpu-check"))
    ap.add_argument("--budget", type=float, default=510, help="seconds for every stage")
    ap.add_argument("--ref", default=None, help="the C reference (default data/gpu_check_ref"
                                                ".npz, or OUT/gpu_check_ref_tiny.npz tiny)")
    ap.add_argument("--make-reference", metavar="PATH")
    ap.add_argument("--bit-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make_reference:
        return make_reference(args.make_reference)
    if args.bit_probe:
        return bit_probe()
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "tiny": TINY, "failed": []}
    ctx = {"out": out, "record": record, "left": lambda: args.budget - (time.time() - t0),
           "ref": args.ref or (out / "gpu_check_ref_tiny.npz" if TINY
                               else ROOT / "data" / "gpu_check_ref.npz")}
    fail_on_purpose = os.environ.get("GPU_CHECK_FAIL", "")
    only = [n.strip() for n in os.environ.get("GPU_CHECK_ONLY", "").split(",") if n.strip()]
    unknown = sorted(set(only + [fail_on_purpose] * bool(fail_on_purpose)) - dict(STAGES).keys())
    if unknown:
        print(f"gpu_check: no stage named {', '.join(unknown)}; the stages are "
              f"{', '.join(dict(STAGES))}", file=sys.stderr)
        return 2
    for name, stage in STAGES:
        if only and name not in only:
            continue
        t = time.time()
        try:
            if name == fail_on_purpose:
                raise RuntimeError("made to fail (GPU_CHECK_FAIL)")
            record[name] = stage(ctx)
        except Exception as exc:                 # said, recorded, and the exit status is 1
            record[name] = exc.args[1] if len(exc.args) > 1 else None
            record["failed"].append(name)
            record[f"{name}_error"] = f"{type(exc).__name__}: {exc.args[0] if exc.args else exc}"
            print(f"gpu_check: {name} FAILED: {record[name + '_error']}", flush=True)
        else:
            print(f"gpu_check: {name}: {json.dumps(record[name])}", flush=True)
        record.setdefault("stage_seconds", {})[name] = round(time.time() - t, 1)
        tmp = out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(record, indent=1, default=str))
        tmp.replace(out / "gpu_check.json")
        if name == "device" and record["failed"]:
            break                                # nothing else can run
    return 1 if record["failed"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
