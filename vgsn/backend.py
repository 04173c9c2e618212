"""The one module that names the symbolic library and its mode; it prints nothing.

vgsn runs on Aesara (Theano's successor) where it installs, i.e. Python <= 3.11,
and on PyTensor (Aesara's maintained fork, same Theano-style API) on Python 3.12+.
Every other module imports the symbolic API from here::

    from vgsn.backend import T, function, shared, scan, grad, floatX

``function`` is the library's own, unchanged.

Choosing the library
--------------------
``VGSN_BACKEND=aesara`` or ``VGSN_BACKEND=pytensor`` forces one; otherwise Aesara
is used when it imports, else PyTensor.

Choosing the mode
-----------------
``VGSN_MODE`` (read once, at import; set it before the first ``import vgsn.backend``,
which is what a ``--backend`` option does) is one of

- ``C`` (``CVM`` is the same): compiled C ops with BLAS, run by the C virtual
  machine. The only mode on Aesara, the faithful Theano-era path, and the default
  wherever jax is not installed.
- ``JAX``: PyTensor's JAX mode (XLA: CPU, or a GPU with jax's CUDA wheels); the
  default on Python >= 3.12 when jax is installed (``default_mode``: measured faster).
- ``NUMBA``: PyTensor's Numba mode.

``MODE`` is the mode in use: ``'c'``, ``'jax'`` or ``'numba'``. A mode on Aesara other
than C, or a ``VGSN_MODE`` that contradicts a ``mode=`` in the user's
``PYTENSOR_FLAGS``, raises a one-line ``ValueError`` at import.

Flags
-----
Set for the library's import, and only where the user has not set them
(``AESARA_FLAGS`` / ``PYTENSOR_FLAGS`` always win; the variable is given back as the
user left it once the library has read it, so child processes choose afresh):

- ``floatX=float32``: the whole model is float32, like the 2015 code on a GPU.
- ``blas__ldflags=-lopenblas`` when a system OpenBLAS is found: without a linked
  BLAS every dot product of the C mode falls back to slow generic code (a VAE update
  then runs at about half speed). PyTensor does not find it by itself.
  ``blas_warning()`` returns the one-line message to show when none is linked.
- PyTensor only: ``mode=`` the chosen mode (``CVM`` for C: PyTensor's own default is
  NUMBA).

Compile caches
--------------
The C mode's compiled modules are cached by the library in its ``base_compiledir``
(``~/.aesara`` or ``~/.pytensor``). In JAX mode, XLA's compiled executables go to JAX's
persistent compilation cache, turned on here in ``<base_compiledir>/jax_cache``
(``jax_cache_dir()``) unless the user points ``JAX_COMPILATION_CACHE_DIR`` elsewhere
(then that is used, untouched): a second process compiles a graph it has seen before
in a fraction of the time.

JAX numerics
------------
When the JAX mode starts (``activate('jax')``):

- every matrix product is computed in full float32: ``jax_default_matmul_precision`` is
  set to ``highest`` unless the user chose one (``JAX_DEFAULT_MATMUL_PRECISION``, or
  ``jax.config`` before vgsn started). jax's own default on an Ampere/Hopper GPU is
  TF32 (a 10-bit mantissa): a guided update's guide outputs then drift from the C
  mode's after a single update. ``VGSN_MATMUL_PRECISION=tf32`` (``--matmul-precision
  tf32``) opts into TF32 for speed runs; ``highest`` forces full precision even over a
  user's jax setting. The C and Numba modes' BLAS always compute full float32.
- ``--xla_gpu_deterministic_ops=true`` is added to ``XLA_FLAGS`` unless the user's
  ``XLA_FLAGS`` mention it: on a GPU, XLA then picks the same kernels (no
  autotuning-dependent or atomic reductions) in every process, so a resumed run
  repeats an uninterrupted one bit for bit. It must be set before jax creates its
  first device, hence here; on a CPU it changes nothing.

``numerics()`` returns both as a dict (recorded in a run's ``config.json`` and its
checkpoints); ``describe()`` names them.
"""
import contextlib
import glob
import importlib
import io
import logging
import os
import warnings

__all__ = [
    "NAME", "MODE", "MODES", "T", "function", "shared", "scan", "grad", "config", "floatX",
    "disconnected_grad", "clone_replace", "blas_linked", "blas_warning", "as_floatX",
    "library_version", "verify_grad", "compile_mode", "check_mode", "register_op", "activate",
    "devices", "describe", "jax_cache_dir", "numerics", "MATMUL_PRECISIONS",
    "set_matmul_precision",
    "Op", "Apply",
]

#: vgsn's mode names -> PyTensor's ``config.mode`` names.
MODES = {"c": "CVM", "jax": "JAX", "numba": "NUMBA"}
_MODE_ALIASES = {"c": "c", "cvm": "c", "jax": "jax", "numba": "numba"}

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


def _user_flags(user_flags):
    """``{name: value}`` of a flag string ``a=1,b=2``."""
    return {k.strip(): v.strip() for k, _, v in
            (item.partition("=") for item in user_flags.split(",") if "=" in item)}


def _flag_string(user_flags, defaults):
    """Append ``defaults`` (dict) to the user's flag string, never overriding one."""
    given = _user_flags(user_flags)
    extra = [f"{k}={v}" for k, v in defaults.items() if k not in given]
    return ",".join([f for f in [user_flags.strip(",")] + extra if f])


def default_mode():
    """The mode used when ``VGSN_MODE`` is unset: 'jax' on Python >= 3.12 when PyTensor
    and jax are both installed (the faster of the two for vgsn's updates on a CPU too,
    ``docs/benchmarks.md``), else 'c'
    (always on Aesara, the faithful Theano-era path)."""
    import importlib.util
    import sys
    if (sys.version_info >= (3, 12)
            and os.environ.get("VGSN_BACKEND", "").strip().lower() != "aesara"
            and importlib.util.find_spec("pytensor") is not None
            and importlib.util.find_spec("jax") is not None):
        return "jax"
    return "c"


def _requested_mode():
    """``VGSN_MODE`` as one of ``MODES`` (``default_mode()`` when unset)."""
    raw = os.environ.get("VGSN_MODE", "").strip()
    mode = _MODE_ALIASES.get(raw.lower()) if raw else default_mode()
    if mode is None:
        raise ValueError(f"VGSN_MODE={raw!r} is not a mode: set it to C, JAX or NUMBA (or unset it)")
    return mode


def _no_blas_record(record):
    return "BLAS" not in record.getMessage()


#: What numpy.distutils' BLAS search prints (on stdout) when it finds no BLAS.
_PROBE_LINES = ("_info:", "NOT AVAILABLE", "not found in", "libraries ", "FOUND:",
                "library_dirs", "define_macros", "language", "include_dirs")


@contextlib.contextmanager
def quiet_blas_probe():
    """The import of Aesara / PyTensor without numpy.distutils' BLAS search noise: its
    warnings (multi-line texts about BLAS, LAPACK, ATLAS not found) and the lines it
    prints on stdout. :func:`blas_warning` says the one thing that matters, with the
    fix. Other output passes through."""
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*(blas|lapack|atlas)")
        warnings.filterwarnings("ignore", module=r"numpy\.distutils")
        warnings.filterwarnings("ignore", message=r"(?s).*numpy\.distutils")
        try:
            with contextlib.redirect_stdout(out):
                yield
        finally:
            kept = [ln for ln in out.getvalue().splitlines()
                    if ln.strip() and not any(w in ln for w in _PROBE_LINES)]
            if kept:
                print("\n".join(kept))


def _choose(mode):
    forced = os.environ.get("VGSN_BACKEND", "").strip().lower()
    if forced not in ("", "aesara", "pytensor"):
        raise ValueError(
            f"VGSN_BACKEND={forced!r} is not a backend: set it to 'aesara' or 'pytensor' (or unset it)")
    if forced == "aesara" and mode != "c":
        raise ValueError(f"VGSN_MODE={mode.upper()} needs PyTensor: Aesara runs the C mode only "
                         "(unset VGSN_MODE, or VGSN_BACKEND=pytensor on Python >= 3.12)")
    # JAX and Numba exist on PyTensor alone.
    order = [forced] if forced else (["aesara", "pytensor"] if mode == "c" else ["pytensor"])
    openblas_dir = _find_openblas_dir()
    errors = []
    for name in order:
        env_var = name.upper() + "_FLAGS"
        defaults = {"floatX": "float32"}
        if openblas_dir is not None:
            defaults["blas__ldflags"] = f"-L{openblas_dir} -lopenblas"
        if name == "pytensor":
            user_mode = _user_flags(os.environ.get(env_var, "")).get("mode")
            if user_mode is not None and os.environ.get("VGSN_MODE", "").strip() \
                    and user_mode.upper() != MODES[mode]:
                raise ValueError(f"VGSN_MODE={mode.upper()} but {env_var} sets mode={user_mode}: "
                                 "keep one of the two")
            defaults["mode"] = MODES[mode]
        user = os.environ.get(env_var)
        os.environ[env_var] = _flag_string(user or "", defaults)
        # The library's own no-BLAS message (a warning or a log record, at import):
        # blas_warning() says it instead, with the fix, where the command line shows it.
        blas_log = logging.getLogger(name + ".tensor.blas")
        blas_log.addFilter(_no_blas_record)
        try:
            with quiet_blas_probe():
                lib = importlib.import_module(name)
                importlib.import_module(name + ".tensor")
            return name, lib
        except Exception as exc:  # ImportError, or Aesara failing on new numpy
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            blas_log.removeFilter(_no_blas_record)
            # The library has read its flags; give child processes the user's own, so that
            # their VGSN_MODE (a sweep's, a benchmark's) is not overruled by ours.
            if user is None:
                del os.environ[env_var]
            else:
                os.environ[env_var] = user
    if mode != "c":
        raise ImportError(f"VGSN_MODE={mode.upper()} needs PyTensor (Python >= 3.12; Aesara runs "
                          f"the C mode only), which did not import ({'; '.join(errors)}). Fix: "
                          "unset VGSN_MODE, or pip install -e .[jax] on Python >= 3.12")
    raise ImportError(
        "vgsn needs Aesara (Python <= 3.11) or PyTensor (Python >= 3.12); none imported ("
        + "; ".join(errors) + "). Fix: pip install -e . (it picks the right one for this Python)")


def _mode_in_use():
    """'c', 'jax' or 'numba', from the linker of the library's default mode (the user's
    ``mode=`` flag may have picked it)."""
    linker = type(_lib.compile.mode.get_default_mode().linker).__name__.lower()
    for name in ("jax", "numba"):
        if name in linker:
            return name
    return "c"


NAME, _lib = _choose(_requested_mode())
MODE = _mode_in_use()
library_version = _lib.__version__
config = _lib.config
T = importlib.import_module(NAME + ".tensor")
function = _lib.function
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
    with quiet_blas_probe():          # the flag's default may search for a BLAS now
        return bool(config.blas__ldflags.strip())


def blas_warning():
    """The one-line message to show the user when the C mode links no BLAS, else None.

    None too in the JAX and Numba modes (they bring their own BLAS) and when
    ``VGSN_QUIET_BLAS`` is set. Nothing is printed here: the command line shows it once.
    """
    if MODE != "c" or blas_linked() or os.environ.get("VGSN_QUIET_BLAS"):
        return None
    return (f"vgsn: {NAME} links no BLAS, so matrix products run several times slower. Fix: "
            "install OpenBLAS (Debian/Ubuntu: apt-get install libopenblas-dev; macOS: brew "
            f"install openblas) or set {NAME.upper()}_FLAGS=blas__ldflags=<your BLAS link flags>.")


def check_mode(mode):
    """``mode`` (None: ``MODE``) as one of ``MODES``' keys; ValueError when it is not
    one, or when the library cannot run it (Aesara: C only)."""
    if mode is None:
        return MODE
    name = _MODE_ALIASES.get(str(mode).strip().lower())
    if name is None:
        raise ValueError(f"mode {mode!r} is not a mode: choose c, jax or numba")
    if NAME == "aesara" and name != "c":
        raise ValueError(f"mode {name} needs PyTensor: Aesara runs the C mode only")
    return name


# vgsn's own Ops' implementations per non-C mode: mode -> [(op class, make)], where
# make(op, node) returns the function the mode's linker calls (see register_op).
_OP_IMPLS = {"jax": [], "numba": []}
_ACTIVE = set()


def _register_with_library(mode, op_type, make):
    if mode == "jax":
        from pytensor.link.jax.dispatch import jax_funcify

        @jax_funcify.register(op_type)
        def _jax(op, node=None, **kwargs):
            return make(op, node)
    else:
        from pytensor.link.numba.dispatch import basic as numba_basic
        register = getattr(numba_basic, "register_funcify_default_op_cache_key", None)
        if register is None:                       # older PyTensor: no numba disk cache key
            register = numba_basic.numba_funcify.register

        @register(op_type)
        def _numba(op, node=None, **kwargs):
            return make(op, node)


def activate(mode):
    """Register vgsn's own Ops with ``mode``'s linker (JAX: imports jax). Done once, at
    import for ``MODE`` and by ``compile_mode(mode=...)`` for another."""
    mode = check_mode(mode)
    if mode == "c" or mode in _ACTIVE:
        return
    _ACTIVE.add(mode)
    if mode == "jax":
        _start_jax()
        # Two expected messages of every JAX compile, said once per Op and call: the
        # library's float64 sum accumulators run in float32 (jax's x64 is off: float32
        # throughout, like a GPU), and shape Asserts are dropped while tracing (XLA
        # checks the shapes itself).
        warnings.filterwarnings("ignore", message="Explicitly requested dtype (float|int)64")
        warnings.filterwarnings("ignore", message="Skipping .* as JAX tracing would remove it")
    for op_type, make in _OP_IMPLS[mode]:
        _register_with_library(mode, op_type, make)


#: ``VGSN_MATMUL_PRECISION`` / ``--matmul-precision`` names -> jax's precision names.
MATMUL_PRECISIONS = {"highest": "highest", "tf32": "tensorfloat32"}
_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


def _requested_precision():
    """jax's name for ``VGSN_MATMUL_PRECISION`` (None when unset); ValueError when it is
    not one of ``MATMUL_PRECISIONS``."""
    raw = os.environ.get("VGSN_MATMUL_PRECISION", "").strip().lower()
    if not raw:
        return None
    if raw not in MATMUL_PRECISIONS:
        raise ValueError(f"VGSN_MATMUL_PRECISION={raw!r} is not a precision: set it to "
                         f"{' or '.join(MATMUL_PRECISIONS)} (or unset it)")
    return MATMUL_PRECISIONS[raw]


def _start_jax():
    """The JAX mode's numerics and cache (see the module's docstring)."""
    wanted = _requested_precision()         # a bad value fails before jax is imported
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = " ".join(f for f in (flags.strip(), _DETERMINISTIC_FLAG) if f)
    import jax
    if wanted is not None:
        jax.config.update("jax_default_matmul_precision", wanted)
    elif jax.config.jax_default_matmul_precision is None:   # the user chose none
        jax.config.update("jax_default_matmul_precision", "highest")
    _start_jax_cache()


def set_matmul_precision(name):
    """Compute the JAX mode's products at ``name`` (a ``MATMUL_PRECISIONS`` key) from now
    on: sets ``VGSN_MATMUL_PRECISION``, and jax's setting when the JAX mode has started
    (functions compiled before keep theirs)."""
    if str(name).lower() not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul precision {name!r} is not one of {', '.join(MATMUL_PRECISIONS)}")
    os.environ["VGSN_MATMUL_PRECISION"] = str(name).lower()
    wanted = _requested_precision()
    if "jax" in _ACTIVE:
        import jax
        jax.config.update("jax_default_matmul_precision", wanted)


def numerics():
    """``{'matmul_precision': ..., 'xla_flags': ...}`` of the mode in use: jax's
    ``jax_default_matmul_precision`` and ``XLA_FLAGS`` in the JAX mode; ``'highest'``
    (full float32: the BLAS) and None in the C and Numba modes."""
    if MODE != "jax":
        return {"matmul_precision": "highest", "xla_flags": None}
    import jax
    return {"matmul_precision": str(jax.config.jax_default_matmul_precision),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def jax_cache_dir():
    """Where JAX's persistent compilation cache lives: ``JAX_COMPILATION_CACHE_DIR`` when the
    user set it, else ``<base_compiledir>/jax_cache`` beside the library's C cache."""
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        str(config.base_compiledir), "jax_cache")


def _start_jax_cache():
    import jax
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return                              # jax reads the user's own setting itself
    jax.config.update("jax_compilation_cache_dir", jax_cache_dir())


def register_op(op_type, jax=None, numba=None):
    """Give vgsn's Op ``op_type`` its JAX and Numba implementations.

    ``jax(op, node)`` returns a function of jax arrays, ``numba(op, node)`` a
    ``numba.njit``-compiled function of numpy arrays (0-d arrays for scalars): what
    PyTensor's ``jax_funcify`` / ``numba_funcify`` return. They are registered when
    the mode is first used, so a C-mode process never imports jax or numba.
    """
    for mode, make in (("jax", jax), ("numba", numba)):
        if make is None:
            continue
        _OP_IMPLS[mode].append((op_type, make))
        if mode in _ACTIVE:
            _register_with_library(mode, op_type, make)


def compile_mode(excluding=(), keep_buffers=False, mode=None):
    """The compile mode for ``function(..., mode=...)``.

    ``mode``: None for the process's mode (``config.mode``, the choice of
    ``VGSN_MODE``), or 'c', 'jax', 'numba' for that mode in this process (PyTensor:
    a model built for another mode than ``MODE``, e.g. to compare the two).
    ``excluding``: graph rewrites to leave out (names the library lacks are ignored).
    ``keep_buffers``: with the C VM linker, keep intermediate arrays allocated between
    calls (``allow_gc=False``): faster for a big function called many times, at the
    price of holding its intermediates in memory.
    """
    mode = check_mode(mode)
    activate(mode)
    modes = _lib.compile.mode
    if mode == MODE:
        compiled = modes.get_default_mode()
    else:
        compiled = modes.get_mode(MODES[mode])
    if keep_buffers and getattr(compiled.linker, "use_cloop", False):
        compiled = modes.Mode(linker="cvm_nogc", optimizer=compiled.provided_optimizer)
    return compiled.excluding(*excluding) if excluding else compiled


def devices():
    """The devices the mode computes on, as short strings: ``['cpu']`` for C and Numba,
    jax's own (``jax.devices()``: ``'cpu'``, ``'cuda:0 (NVIDIA H200)'``...) for JAX."""
    if MODE != "jax":
        return ["cpu"]
    import jax
    out = []
    for d in jax.devices():
        kind = getattr(d, "device_kind", "")
        name = f"{d.platform}:{d.id}" if d.platform != "cpu" else "cpu"
        out.append(f"{name} ({kind})" if kind and d.platform != "cpu" else name)
    return out


def describe():
    """One line naming the library, the mode and the device, e.g.
    ``pytensor 3.3.8, mode jax on cuda:0 (NVIDIA H200), matmul precision highest,
    XLA_FLAGS=--xla_gpu_deterministic_ops=true`` (for logs and reports)."""
    where = devices()
    line = f"{NAME} {library_version}, mode {MODE} on {', '.join(sorted(set(where)))}"
    if MODE == "jax":
        n = numerics()
        line += f", matmul precision {n['matmul_precision']}, XLA_FLAGS={n['xla_flags']}"
    return line


def as_floatX(value):
    """``numpy.asarray(value, dtype=floatX)``."""
    import numpy
    return numpy.asarray(value, dtype=floatX)


activate(MODE)
