"""Back-end choice shared by the benchmarks: ``--backend c,jax`` (one or several).

Several back-ends run in ONE process, alternating call by call, so a shared,
loaded machine slows them alike and their ratio stays readable: each object is
built for its mode with ``use_mode`` (``vgsn.backend.compile_mode(mode=...)``). The
first back-end named is also the process's ``VGSN_MODE`` when vgsn is not yet
imported (so ``--backend jax`` alone runs exactly what ``VGSN_MODE=JAX`` runs).
"""
import os
import sys

NAMES = ("c", "jax", "numba")


def parse(text):
    """'c,jax' -> ['c', 'jax'] (ValueError on an unknown name)."""
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in NAMES]
    if bad or not modes:
        raise ValueError(f"--backend {text!r}: choose one or more of {', '.join(NAMES)}")
    return modes


def preselect(argv=None):
    """Set VGSN_MODE from the first ``--backend`` value before vgsn.backend is imported."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--backend" and i + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--backend=") else None)
        if value and "vgsn.backend" not in sys.modules:
            first = parse(value)[0]
            os.environ.setdefault("VGSN_MODE", first.upper())
            return


def device_line(modes):
    """Where each back-end computes: the CPU for C and Numba, ``jax.devices()`` for JAX."""
    from vgsn import backend
    parts = []
    for m in modes:
        if m == "jax":
            import jax
            devs = ", ".join(f"{d.platform}:{d.id}" + (f" {d.device_kind}" if d.platform != "cpu"
                                                        else "") for d in jax.devices())
            parts.append(f"jax on {devs} (jax {jax.__version__})")
        else:
            parts.append(f"{m} on cpu")
    return (f"{backend.NAME} {backend.library_version} (process mode {backend.MODE}); "
            + "; ".join(parts))


def load():
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


# ---- one worker process per back-end ------------------------------------------------
# Timing two back-ends in ONE process is unfair: XLA's worker threads keep spinning for
# a while after each call and slow the BLAS threads of the C update that follows (and
# numpy's GEMM floor). So each back-end lives in its own process, built once, and the
# parent asks them in turn ("run k updates"): the other waits idle on its pipe.
import json as _json  # noqa: E402
import subprocess as _subprocess  # noqa: E402


class Worker:
    """A child ``python SCRIPT --worker MODE ARGS...`` with ``VGSN_MODE=MODE``, serving
    ``serve``'s requests; ``ask(cmd, **kw)`` returns its JSON answer."""

    def __init__(self, script, mode, args=(), env=None):
        child_env = dict(os.environ if env is None else env)
        child_env["VGSN_MODE"] = mode.upper()
        self.mode = mode
        self.proc = _subprocess.Popen([sys.executable, script, "--worker", mode, *args],
                                      stdin=_subprocess.PIPE, stdout=_subprocess.PIPE,
                                      env=child_env, text=True, bufsize=1)

    def ask(self, cmd, **kwargs):
        self.proc.stdin.write(_json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("@@"):
                answer = _json.loads(line[2:])
                if "error" in answer:
                    raise RuntimeError(f"{self.mode} worker: {answer['error']}")
                return answer
        raise RuntimeError(f"{self.mode} worker exited ({self.proc.wait()})")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def serve(handlers):
    """Worker side: answer ``{"cmd": name, ...}`` lines with ``handlers[name](**kw)``."""
    import traceback
    for line in sys.stdin:
        request = _json.loads(line)
        try:
            answer = handlers[request.pop("cmd")](**request)
        except Exception as exc:  # said to the parent, which stops
            answer = {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"}
        sys.stdout.write("@@" + _json.dumps(answer) + "\n")
        sys.stdout.flush()


def alternate(workers, cmd, rounds, **kwargs):
    """Ask every worker ``cmd`` in turn, ``rounds`` times: {mode: [answers]}."""
    out = {w.mode: [] for w in workers}
    for _ in range(rounds):
        for w in workers:
            out[w.mode].append(w.ask(cmd, **kwargs))
    return out


def worker_devices():
    """For a worker's "devices" request: ``backend.describe()``."""
    from vgsn import backend
    return {"devices": backend.describe()}
