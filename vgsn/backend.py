"""The one module that names the symbolic library.

vgsn runs on Aesara (Theano's successor) where it installs, i.e. Python <= 3.11,
and on PyTensor (Aesara's maintained fork, same Theano-style API) on Python 3.12+.
Every other module imports the symbolic API from here::

    from vgsn.backend import T, function, shared, scan, grad, floatX

Choosing
--------
``VGSN_BACKEND=aesara`` or ``VGSN_BACKEND=pytensor`` forces one; otherwise Aesara
is used when it imports, else PyTensor.

Flags
-----
Set before the library is imported, and only where the user has not set them
(``AESARA_FLAGS`` / ``PYTENSOR_FLAGS`` always win):

- ``floatX=float32``: the whole model is float32, like the 2015 code on a GPU.
- ``blas__ldflags=-lopenblas`` when a system OpenBLAS is found: without a linked
  BLAS every dot product falls back to slow generic code (a VAE update then runs
  at about half speed). PyTensor does not find it by itself.
- PyTensor only: ``mode=CVM`` (the C virtual machine, compiled C ops with BLAS),
  since its default NUMBA mode is slower here and compiles for long on first call.
  ``VGSN_MODE=JAX`` (or NUMBA) picks another PyTensor mode.
"""
import glob
import importlib
import os
import sys
import warnings

__all__ = [
    "NAME", "T", "function", "shared", "scan", "grad", "config", "floatX",
    "disconnected_grad", "clone_replace", "blas_linked", "as_floatX",
    "library_version", "verify_grad", "compile_mode", "Op", "Apply",
]

_OPENBLAS_GLOBS = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so",
    "/usr/lib/libopenblas.so",
    "/usr/lib64/libopenblas.so",
    "/usr/local/lib/libopenblas.so",
    "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
    "/usr/local/opt/openblas/lib/libopenblas.dylib",
)


def _find_openblas_dir():
    """Directory holding a linkable ``libopenblas`` (the -dev symlink), or None."""
    for pattern in _OPENBLAS_GLOBS:
        for path in glob.glob(pattern):
            return os.path.dirname(path)
    return None


def _flag_string(user_flags, defaults):
    """Append ``defaults`` (dict) to the user's flag string, never overriding one."""
    given = {item.split("=", 1)[0].strip() for item in user_flags.split(",") if "=" in item}
    extra = [f"{k}={v}" for k, v in defaults.items() if k not in given]
    return ",".join([f for f in [user_flags.strip(",")] + extra if f])


def _configure(env_var, defaults):
    os.environ[env_var] = _flag_string(os.environ.get(env_var, ""), defaults)


def _choose():
    forced = os.environ.get("VGSN_BACKEND", "").strip().lower()
    if forced not in ("", "aesara", "pytensor"):
        raise ValueError(
            f"VGSN_BACKEND={forced!r} is not a backend: set it to 'aesara' or 'pytensor' (or unset it)")
    order = [forced] if forced else ["aesara", "pytensor"]
    openblas_dir = _find_openblas_dir()
    errors = []
    for name in order:
        defaults = {"floatX": "float32"}
        if openblas_dir is not None:
            defaults["blas__ldflags"] = f"-L{openblas_dir} -lopenblas"
        if name == "pytensor":
            defaults["mode"] = os.environ.get("VGSN_MODE", "CVM")
        _configure(name.upper() + "_FLAGS", defaults)
        try:
            with warnings.catch_warnings():
                # We print our own one-line BLAS warning below.
                warnings.filterwarnings("ignore", message=".*BLAS.*")
                lib = importlib.import_module(name)
                importlib.import_module(name + ".tensor")
            return name, lib
        except Exception as exc:  # ImportError, or Aesara failing on new numpy
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise ImportError(
        "vgsn needs Aesara (Python <= 3.11) or PyTensor (Python >= 3.12); none imported ("
        + "; ".join(errors) + "). Fix: pip install -e . (it picks the right one for this Python)")


NAME, _lib = _choose()
library_version = _lib.__version__
config = _lib.config
T = importlib.import_module(NAME + ".tensor")
_library_function = _lib.function
shared = _lib.shared
scan = _lib.scan
grad = _lib.grad
floatX = config.floatX

if NAME == "aesara":
    from aesara.gradient import disconnected_grad, verify_grad  # noqa: E402
    from aesara.graph.basic import Apply, clone_replace  # noqa: E402
    from aesara.graph.op import Op  # noqa: E402
else:
    from pytensor.gradient import disconnected_grad, verify_grad  # noqa: E402
    from pytensor.graph.basic import Apply  # noqa: E402
    from pytensor.graph.op import Op  # noqa: E402
    from pytensor.graph.replace import clone_replace  # noqa: E402


def blas_linked():
    """True when the C ops link a real BLAS (``blas__ldflags`` is non-empty)."""
    return bool(config.blas__ldflags.strip())


def compile_mode(excluding=(), keep_buffers=False):
    """The default compile mode (``config.mode``) for ``function(..., mode=...)``.

    ``excluding``: graph rewrites to leave out (names the library lacks are ignored).
    ``keep_buffers``: with the C VM linker, keep intermediate arrays allocated between
    calls (``allow_gc=False``): faster for a big function called many times, at the
    price of holding its intermediates in memory.
    """
    modes = _lib.compile.mode
    mode = modes.get_default_mode()
    if keep_buffers and getattr(mode.linker, "use_cloop", False):
        mode = modes.Mode(linker="cvm_nogc", optimizer=mode.provided_optimizer)
    return mode.excluding(*excluding) if excluding else mode


def as_floatX(value):
    """``numpy.asarray(value, dtype=floatX)``."""
    import numpy
    return numpy.asarray(value, dtype=floatX)


def function(inputs, outputs=None, **kwargs):
    """The library's ``function`` (same arguments), keeping rewritten graphs on disk so a
    later process links them without rewriting again: see ``vgsn.graphcache``."""
    from vgsn.graphcache import function as cached_function
    return cached_function(inputs, outputs, **kwargs)


if not blas_linked() and not os.environ.get("VGSN_QUIET_BLAS"):
    print(
        f"vgsn: {NAME} links no BLAS, so matrix products run several times slower. Fix: install "
        "OpenBLAS (Debian/Ubuntu: apt-get install libopenblas-dev; macOS: brew install openblas) "
        f"or set {NAME.upper()}_FLAGS=blas__ldflags=<your BLAS link flags>.",
        file=sys.stderr)
