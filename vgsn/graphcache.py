"""A disk cache of rewritten graphs: compile a function once, re-link it in later processes.

OPT-IN: ``VGSN_GRAPH_CACHE=1`` turns it on; unset (or 0) every call is an ordinary
compile. Why it is not on by default is at the end of this docstring.

Compiling a Theano-style function has three parts: building the symbolic graph in
Python, *rewriting* it (canonicalisation, fusion, BLAS, in-place, scan rewrites) and
*linking* it (loading a C module per op from the compile cache). Aesara and PyTensor
cache the C modules on disk, but not the rewritten graph: every new process pays the
rewriting again, which is most of a warm compile (guided update at the 2015 sizes,
Aesara: 14.2 s with the C modules cached, 2.4 s with the rewritten graph cached too).

``function`` here takes the library's ``function`` arguments and keeps the rewritten
graph too; vgsn calls it by name where that pays (the two ``train_step`` builds and
``run_chain``). The key is a digest of the graph *as built* (every op with its
properties, every constant's bytes, the types of inputs and shared variables, the
updates), of the compile mode (linker settings and rewrite query), of the library's
name and version, of every config option (but the folders), of vgsn's version and of
the bytes of every vgsn source file (an edited Op or graph builder means a new key).
On a miss it compiles as usual and stores the rewritten graph, its shared variables
written as references (never their values). On a hit it loads that graph, binds the
references to the caller's own shared variables, and hands it to the library with
rewriting switched off: the function is linked from the same rewritten graph the
first process ran, in-place ops included (the library's destroy handler still orders
them and checks the inputs they may overwrite).

Only the C linker is served (JAX and Numba compile the ordinary way). Anything the
digest does not know how to describe exactly (an op without ``__props__``, a free
variable, a rewrite added by hand to the mode) makes the call an ordinary compile. A
stored graph that fails to load is warned about once (``warnings.warn``, with the
file's path), compiled the ordinary way and stored again. ``stats()`` gives the
process's hit / miss counts, ``summary()`` the same as one line for a run's log.
Stored graphs are pickles, trusted like the library's own compiled modules beside
them. Files live in ``<compiledir>/vgsn_graphs`` (``VGSN_GRAPH_CACHE_DIR`` moves
them), are written atomically, and the least recently used go when they pass 256 MB;
``clear()`` empties it.

Why opt-in: a false hit cannot be ruled out by construction
------------------------------------------------------------
A hit links a pickled graph with rewriting off and ``accept_inplace=True``, so a key
that matches when the graphs should differ gives wrong numbers, not an error. The key
is as exact as the library lets it be, but it reads the library's internals and cannot
see everything that decides a rewrite:

- it names the rewrite *query* (include / exclude tags), not the rewrites registered
  under those tags: code that registers a rewrite at run time (outside vgsn's source,
  which is in the key) changes the result under the same key;
- ops are described by ``__props__``; an op whose behaviour also depends on attributes
  outside its props (legal, if unusual), or a Scan setting ``_inner_graph_tok`` skips
  (non-plain values of ``vars(op)``), is keyed as if it were equal;
- types and dataclasses are described by their ``repr`` (refused when it holds an
  ``" at 0x"`` address); a ``repr`` that omits a field that matters collides;
- an editable install of the library changed without a new version number keeps its
  version string;
- the config is read through ``_config_var_dict``, a private attribute: a library
  release that renames it drops every option from the key.

The tests check bit-identical updates from a stored graph and a new entry for other
flags, ops and constants, but they cannot prove the list above empty, so the default
is the library's own compile.
"""
import dataclasses
import hashlib
import os
import pickle
import tempfile
import types
import warnings

import numpy as np

import vgsn
from vgsn import backend as B

__all__ = ["function", "graph_digest", "cache_dir", "clear", "enabled", "stats", "summary",
           "source_digest", "Uncacheable"]

FORMAT = 2
MAX_BYTES = 256 * 2**20    # least recently used graphs go beyond this (a guided update: ~2 MB)
_lib = B._lib
_library_function = B.function
_STATS = {"hits": 0, "misses": 0, "bypassed": 0, "stored": 0, "load_errors": 0,
          "store_errors": 0}
_warned = set()             # files (or folders) already warned about in this process
_source_digest = None

if B.NAME == "aesara":
    from aesara.compile.sharedvalue import SharedVariable
    from aesara.graph.basic import Constant, Variable, io_toposort
    from aesara.graph.type import Type as _Type
    from aesara.scalar import basic as _scalar_basic
    from aesara.scalar.basic import ScalarOp as _ScalarOp
else:
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Constant, Variable
    try:
        from pytensor.graph.traversal import io_toposort
    except ImportError:                                     # PyTensor < 2.32
        from pytensor.graph.basic import io_toposort
    from pytensor.graph.type import Type as _Type
    from pytensor.scalar import basic as _scalar_basic
    from pytensor.scalar.basic import ScalarOp as _ScalarOp


_SCALAR_EQS = {_ScalarOp.__eq__} | {
    getattr(_scalar_basic, c).__eq__ for c in ("LogicalComparison", "FixedLogicalComparison")
    if hasattr(_scalar_basic, c)}


class Uncacheable(Exception):
    """The graph holds something the digest cannot describe exactly."""


def enabled():
    """True when ``VGSN_GRAPH_CACHE`` is 1 / on / yes / true (off by default: see the
    module docstring); a value that is none of these or 0 / off / no / false is an error."""
    raw = os.environ.get("VGSN_GRAPH_CACHE", "").strip().lower()
    if raw in ("1", "on", "yes", "true"):
        return True
    if raw in ("", "0", "off", "no", "false"):
        return False
    raise ValueError(f"VGSN_GRAPH_CACHE={raw!r} is not a switch: set it to 1 (on) or 0 (off)")


def stats():
    """This process's counts, a new dict: ``hits`` (linked from a stored graph), ``misses``
    (compiled and stored), ``bypassed`` (ordinary compile: cache off, another linker, or a
    call it cannot key), ``stored``, ``load_errors``, ``store_errors``."""
    return dict(_STATS)


def summary():
    """One line for a run's log: whether the cache is on, where, and ``stats()``."""
    st = stats()
    if not enabled():
        return f"graph cache: off (VGSN_GRAPH_CACHE=1 turns it on); {st['bypassed']} compiles"
    return (f"graph cache: on ({cache_dir()}): {st['hits']} hits, {st['misses']} misses, "
            f"{st['bypassed']} bypassed, {st['stored']} stored, {st['load_errors']} load errors, "
            f"{st['store_errors']} store errors")


def _warn_once(where, text):
    if where not in _warned:
        _warned.add(where)
        warnings.warn(text, RuntimeWarning, stacklevel=3)


def cache_dir():
    """``VGSN_GRAPH_CACHE_DIR`` if set, else ``<compiledir>/vgsn_graphs`` (next to the
    library's own cache of C modules)."""
    return (os.environ.get("VGSN_GRAPH_CACHE_DIR")
            or os.path.join(B.config.compiledir, "vgsn_graphs"))


def clear():
    """Delete every stored graph; returns how many files went."""
    d, n = cache_dir(), 0
    if os.path.isdir(d):
        for name in os.listdir(d):
            if name.endswith(".pkl"):
                os.remove(os.path.join(d, name))
                n += 1
    return n


# ---- the digest --------------------------------------------------------------------
def _name(obj):
    return f"{obj.__module__}.{obj.__qualname__}"


def _tok(v):
    """An exact, process-independent text for a value held by an op or a type."""
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return repr(v)
    if isinstance(v, np.ndarray) and v.dtype == object:
        return f"ndobj[{v.shape},{_tok(v.tolist())}]"
    if isinstance(v, np.ndarray):
        data = np.ascontiguousarray(v)
        return f"nd[{data.dtype},{data.shape},{hashlib.sha256(data.tobytes()).hexdigest()}]"
    if isinstance(v, (np.generic, np.dtype)):
        return f"{type(v).__name__}[{v!r}]"
    if isinstance(v, (tuple, list)):
        return type(v).__name__[0] + "(" + ",".join(_tok(x) for x in v) + ")"
    if isinstance(v, slice):
        return f"slice({_tok(v.start)},{_tok(v.stop)},{_tok(v.step)})"
    if isinstance(v, (set, frozenset)) or type(v).__name__ == "OrderedSet":
        return "set(" + ",".join(sorted(_tok(x) for x in v)) + ")"
    if hasattr(v, "items") and hasattr(v, "keys"):          # dict, frozendict
        return "dict(" + ",".join(sorted(f"{_tok(k)}:{_tok(x)}" for k, x in v.items())) + ")"
    if isinstance(v, (type, types.FunctionType, types.BuiltinFunctionType)):
        return _name(v)
    if isinstance(v, Variable):
        raise Uncacheable(f"a variable held by an op ({type(v).__name__})")
    if hasattr(v, "inner_inputs") and hasattr(v, "inner_outputs"):   # Scan, OpFromGraph
        return _inner_graph_tok(v)
    if getattr(type(v), "__eq__", None) in _SCALAR_EQS:
        # Scalar ops without props compare by class and output_types_preference
        # (comparisons also by their ``bool`` flag).
        return (_name(type(v)) + "{" + _tok(getattr(v, "output_types_preference", None))
                + "," + _tok(getattr(v, "bool", None)) + "}")
    props = getattr(type(v), "__props__", None)
    if props is not None:                                   # ops, scalar ops, some types
        return _name(type(v)) + "{" + ",".join(f"{p}={_tok(getattr(v, p))}" for p in props) + "}"
    if isinstance(v, _Type) or dataclasses.is_dataclass(v):
        text = repr(v)
        if " at 0x" not in text:
            return _name(type(v)) + ":" + text
    if type(v).__init__ is object.__init__ and not vars(v):  # stateless helper objects
        return _name(type(v))
    raise Uncacheable(f"cannot describe a {_name(type(v))} exactly")


def _inner_graph_tok(op):
    """An op with an inner graph: its scalar settings and a digest of the inner graph."""
    settings = {}
    for key, value in sorted(vars(op).items()):
        if key.startswith("_") or key in ("fgraph", "inner_inputs", "inner_outputs", "fn",
                                           "inputs", "outputs", "destroy_map", "view_map"):
            continue
        if isinstance(value, (bool, int, float, str, type(None), tuple)) or \
                dataclasses.is_dataclass(value):
            settings[key] = _tok(value)
        elif key == "mode" and isinstance(value, str):
            settings[key] = value
    inner = graph_digest(list(op.inner_inputs), list(op.inner_outputs), [])
    return _name(type(op)) + "{" + _tok(settings) + "|" + inner + "}"


def _type_tok(var):
    return _tok(var.type)


def graph_digest(inputs, outputs, shared_order, updates=(), trace=None):
    """sha256 of the graph from ``inputs`` to ``outputs`` (and ``updates``, pairs
    (shared variable, expression)). Shared variables are numbered in order of first
    appearance and appended to ``shared_order``; their values are not part of the
    digest, their types are. Raises ``Uncacheable`` for what it cannot describe.
    ``trace``: a list that receives every text hashed (to see why two graphs differ)."""
    h = hashlib.sha256()
    ref = {}

    def put(text):
        if trace is not None:
            trace.append(text)
        h.update(text.encode())
        h.update(b"\x00")

    def root(v):
        if isinstance(v, SharedVariable):
            ref[v] = f"s{len(shared_order)}"
            shared_order.append(v)
            put(f"shared {_type_tok(v)}")
        elif isinstance(v, Constant):
            ref[v] = f"c{len(ref)}"
            put(f"const {_type_tok(v)} {_tok(v.data)}")
        else:
            raise Uncacheable(f"free variable {v} (not an input, shared variable or constant)")

    for i, v in enumerate(inputs):
        ref[v] = f"i{i}"
        put(f"input {_type_tok(v)}")
    targets = [sv for sv, _ in updates]
    exprs = list(outputs) + [e for _, e in updates]
    for node in io_toposort(list(inputs), exprs + targets):
        for v in node.inputs:
            if v not in ref:
                root(v)
        put(_tok(node.op) + "(" + ",".join(ref[v] for v in node.inputs) + ")")
        for o in node.outputs:
            ref[o] = f"n{len(ref)}"
            put(_type_tok(o))
    for v in exprs + targets:
        if v not in ref:
            root(v)
    put("out " + ",".join(ref[v] for v in outputs))
    put("upd " + ",".join(f"{ref[sv]}<-{ref[e]}" for sv, e in updates))
    return h.hexdigest()


def source_digest():
    """sha256 of vgsn's version and of every ``.py`` file of the installed vgsn package
    (relative path and bytes, in path order); computed once per process."""
    global _source_digest
    if _source_digest is None:
        root = os.path.dirname(os.path.abspath(vgsn.__file__))
        h = hashlib.sha256(f"vgsn {vgsn.__version__}".encode())
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            files += [os.path.join(folder, n) for n in names if n.endswith(".py")]
        for path in sorted(files):
            h.update(b"\x00" + os.path.relpath(path, root).encode() + b"\x00")
            with open(path, "rb") as f:
                h.update(f.read())
        _source_digest = h.hexdigest()
    return _source_digest


def _c_linker(mode):
    """True for the C virtual machine / C linkers (the only ones the cache serves)."""
    name = type(mode.linker).__name__.lower()
    return not any(other in name for other in ("jax", "numba", "pytorch", "mlx"))


def _mode_tok(mode):
    query = getattr(mode, "provided_optimizer", None)
    if isinstance(query, str) or query is None:
        opt = repr(query)
    else:
        state = {k: v for k, v in vars(query).items() if k != "extra_rewrites"}
        if getattr(query, "extra_rewrites", None) or getattr(query, "extra_optimizations", None):
            raise Uncacheable("the mode carries rewrites added by hand")
        opt = _name(type(query)) + _tok(state)
    linker = mode.linker
    settings = {k: v for k, v in vars(linker).items()
                if k != "fgraph" and isinstance(v, (bool, int, float, str, type(None)))}
    return f"{_name(type(linker))}{_tok(settings)}|{opt}"


def _config_tok():
    """Every config option's value but the folders': rewrites read many of them."""
    cfg, items = B.config, []
    for name in sorted(getattr(cfg, "_config_var_dict", {})):
        if "dir" in name:
            continue
        try:
            items.append(f"{name}={getattr(cfg, name)!r}")
        except Exception:                                   # an option that cannot resolve
            items.append(f"{name}=?")
    return "\n".join(items)


def _key(inputs, outputs, updates, mode, shared_order):
    parts = [
        f"vgsn-graphcache-{FORMAT}", source_digest(), B.NAME, B.library_version, _config_tok(),
        _mode_tok(mode),
        graph_digest(inputs, outputs, shared_order, updates),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# ---- storing and loading -------------------------------------------------------------
class _Pickler(pickle.Pickler):
    def __init__(self, file, shared_ids):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared_ids = shared_ids

    def persistent_id(self, obj):
        if isinstance(obj, SharedVariable):
            k = self.shared_ids.get(id(obj.container))
            if k is None:
                raise Uncacheable(f"the rewritten graph holds an unknown shared variable {obj}")
            return ("vgsn-shared", k)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, shared):
        super().__init__(file)
        self.shared = shared

    def persistent_load(self, pid):
        tag, k = pid
        if tag != "vgsn-shared" or not 0 <= k < len(self.shared):
            raise pickle.UnpicklingError(f"bad shared reference {pid!r}")
        return self.shared[k]


def _store(path, fn, n_inputs, shared_order):
    fg = fn.maker.fgraph
    shared_ids = {id(sv.container): k for k, sv in enumerate(shared_order)}
    n_updates = len(fg.update_mapping or {})
    n_out = len(fg.outputs) - n_updates
    updates = []
    for out_idx, in_idx in sorted((fg.update_mapping or {}).items()):
        k = shared_ids.get(id(getattr(fg.inputs[in_idx], "container", None)))
        if k is None:
            raise Uncacheable("an update of an unknown shared variable")
        updates.append((k, fg.outputs[out_idx]))
    payload = dict(format=FORMAT, inputs=list(fg.inputs[:n_inputs]),
                   outputs=list(fg.outputs[:n_out]), updates=updates)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _Pickler(f, shared_ids).dump(payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _prune(os.path.dirname(path))


def _prune(d):
    entries = []
    for name in os.listdir(d):
        if name.endswith(".pkl"):
            try:
                st = os.stat(os.path.join(d, name))
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, name))
    total = sum(e[1] for e in entries)
    for _, size, name in sorted(entries):       # oldest use first
        if total <= MAX_BYTES:
            break
        try:
            os.remove(os.path.join(d, name))
        except OSError:
            pass
        total -= size


def _load(path, inputs, shared_order):
    with open(path, "rb") as f:
        payload = _Unpickler(f, shared_order).load()
    if payload.get("format") != FORMAT or len(payload["inputs"]) != len(inputs):
        raise ValueError("stored graph does not match")
    for got, want in zip(payload["inputs"], inputs):
        if got.type != want.type:
            raise ValueError("stored graph's input types differ")
    os.utime(path)
    return payload


_PLAIN = {"name", "mode", "profile", "on_unused_input", "allow_input_downcast"}


def function(inputs, outputs=None, updates=None, **kwargs):
    """The library's ``function``, with the rewritten graph cached on disk when
    ``VGSN_GRAPH_CACHE=1`` (module docstring). Takes the same arguments; with the cache
    off, another linker than C, or a call it cannot key exactly (``givens``,
    ``no_default_updates``, ``In``/``Out`` specs, ...), it is the library's ordinary
    compile."""
    upd = list(updates.items()) if hasattr(updates, "items") else list(updates or [])
    single = outputs is not None and not isinstance(outputs, (list, tuple))
    outs = [] if outputs is None else ([outputs] if single else list(outputs))
    plain = (enabled() and set(kwargs) <= _PLAIN and isinstance(inputs, (list, tuple))
             and all(isinstance(v, Variable) for v in list(inputs) + outs)
             and all(isinstance(sv, SharedVariable) and isinstance(e, Variable) for sv, e in upd))
    mode = _lib.compile.mode.get_mode(kwargs.get("mode")) if plain else None   # a Mode passes
    if not plain or not _c_linker(mode):
        _STATS["bypassed"] += 1
        return _library_function(inputs, outputs, updates=updates, **kwargs)
    shared_order = []
    try:
        key = _key(list(inputs), outs, upd, mode, shared_order)
    except Uncacheable:
        _STATS["bypassed"] += 1
        return _library_function(inputs, outputs, updates=updates, **kwargs)
    path = os.path.join(cache_dir(), key + ".pkl")
    if os.path.exists(path):
        try:
            payload = _load(path, list(inputs), shared_order)
        except Exception as exc:
            _STATS["load_errors"] += 1
            _warn_once(path, f"vgsn.graphcache: could not load the stored graph {path} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                             "compiling the ordinary way and storing it again")
        else:
            _STATS["hits"] += 1
            linked = _lib.compile.mode.Mode(linker=mode.linker, optimizer=None)
            new_outs = payload["outputs"][0] if single else (None if outputs is None else
                                                              payload["outputs"])
            rest = {k: v for k, v in kwargs.items() if k != "mode"}
            rest["on_unused_input"] = "ignore"
            return _library_function(payload["inputs"], new_outs,
                                     updates=[(shared_order[k], e) for k, e in payload["updates"]],
                                     mode=linked, accept_inplace=True, **rest)
    _STATS["misses"] += 1
    fn = _library_function(inputs, outputs, updates=updates, **kwargs)
    try:
        _store(path, fn, len(inputs), shared_order)
        _STATS["stored"] += 1
    except Exception as exc:    # the function is fine; only the next process compiles again
        _STATS["store_errors"] += 1
        _warn_once(os.path.dirname(path),
                   f"vgsn.graphcache: could not store a rewritten graph in {os.path.dirname(path)} "
                   f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                   "later processes will rewrite it again")
    return fn
