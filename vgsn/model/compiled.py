"""The compile and state plumbing ``OneStageModel`` and ``VCGLoop`` share.

Each keeps its compiled functions in a dict by name, built on first use by its own
``_build(name)`` (the one place it builds them), and its state as named shared
variables: trained parameters, momentum (``sgd``'s velocities) and hyperparameters.
"""
import numpy as np

from vgsn import backend
from vgsn.backend import T, floatX


def as_rows(X, dim, what):
    """``X`` as a float32 (rows, dim) array; ValueError naming ``what`` otherwise."""
    X = np.asarray(X, dtype=floatX)
    if X.ndim != 2 or X.shape[1] != dim:
        raise ValueError(f"{what} must be a (rows, {dim}) array, got shape {X.shape}")
    return X


def _load_state(variables, required, values, strict, owner):
    """Set shared ``variables`` from ``values`` (name -> array), all or nothing:
    every name and shape is checked before the first value is written. Names not
    among ``variables`` are ignored; with ``strict`` every ``required`` one must
    be present."""
    known = {v.name: v for v in variables}
    if strict:
        missing = [p.name for p in required if p.name not in values]
        if missing:
            raise ValueError(f"state is missing parameters: {', '.join(missing)}")
    staged = []
    for name, value in values.items():
        if name not in known:
            continue
        var = known[name]
        value = np.asarray(value, dtype=var.dtype)
        if value.shape != var.get_value().shape:
            raise ValueError(
                f"{name}: shape {value.shape} does not fit the {owner}'s {var.get_value().shape}")
        staged.append((var, value))
    for var, value in staged:
        var.set_value(value)


class Compiled:
    """The compile and state plumbing ``OneStageModel`` and ``VCGLoop`` share.

    A subclass defines ``_build(name)`` (the one place its functions are built),
    ``FUNCTIONS`` (what ``compile()`` builds by default), ``_OWNER`` (its name in
    error messages) and ``_trained()`` (the parameters every state must hold), and
    sets ``self._fns = {}``, ``self.hyper`` and ``self.velocities`` (the momentum
    state: empty until ``sgd`` makes it when the train step is built, so load a
    state with momentum AFTER ``compile(("train_step",))``).
    """

    FUNCTIONS = ()
    #: Functions whose graph needs static row counts in the JAX mode (XLA allocates a
    #: scan's output buffer from them): built once per distinct ``rows`` key there.
    STATIC_ROWS = ()
    _OWNER = "model"

    def _build(self, name, rows=None):
        raise NotImplementedError

    def _trained(self):
        raise NotImplementedError

    @property
    def mode(self):
        """The mode its functions are compiled for: 'c', 'jax' or 'numba' (default
        ``backend.MODE``; ``use_mode`` changes it)."""
        return self.__dict__.get("_mode") or backend.MODE

    def use_mode(self, mode):
        """Compile this object's functions for ``mode`` ('c', 'jax', 'numba'; None: the
        process's ``backend.MODE``) from now on; the functions compiled so far are
        dropped, the state (parameters, momentum, hyperparameters) is kept."""
        self.__dict__["_mode"] = backend.check_mode(mode)
        self._fns = {}
        return self

    def compile_mode(self, excluding=(), keep_buffers=False):
        """``backend.compile_mode`` for this object's mode."""
        return backend.compile_mode(excluding, keep_buffers, mode=self.mode)

    def static_rows(self):
        """True when graphs need static row counts (the JAX mode)."""
        return self.mode == "jax"

    @staticmethod
    def input(name, shape=None, ndim=2):
        """A float32 input of ``ndim`` dimensions; with ``shape`` (a tuple of ints) its
        shape is static in the graph (what XLA needs), else every size is symbolic
        (the C and Numba graphs, exactly as before)."""
        if shape is None:
            return T.matrix(name, dtype=floatX) if ndim == 2 else T.tensor3(name, dtype=floatX)
        return T.tensor(dtype=floatX, shape=tuple(int(s) for s in shape), name=name)

    def _fn(self, name, rows=None):
        """The compiled function ``name``; ``rows`` (a tuple of the call's row counts)
        keys it where ``STATIC_ROWS`` needs it and the mode is JAX."""
        key = (name, tuple(rows)) if rows is not None and name in self.STATIC_ROWS \
            and self.static_rows() else name
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fns[key] = self._build(name, key[1] if isinstance(key, tuple) else None)
        return fn

    def compile(self, names=None):
        """Compile the named functions now (default ``FUNCTIONS``; otherwise each
        compiles on first use). In the JAX mode a ``STATIC_ROWS`` function is built for
        each row count on its first call instead (its shapes are not known before)."""
        for name in self.FUNCTIONS if names is None else names:
            if name in self.STATIC_ROWS and self.static_rows():
                continue
            self._fn(name)
        return self

    def sgd_momentum(self, constant):
        """The momentum a train step uses: the shared ``hyper.momentum`` when this
        object holds one (a scheduled momentum), else the Python float ``constant``
        (folded into the graph as before)."""
        return self.hyper.var("momentum") if "momentum" in self.hyper else constant

    def state_variables(self):
        """Every shared variable of the state, each with a unique name: the trained
        parameters, the momentum (once built) and the hyperparameters."""
        return self._trained() + list(self.velocities) + self.hyper.variables()

    def get_state(self):
        """dict name -> array copy of ``state_variables()`` (and of any momentum
        loaded by ``set_state`` whose variables the train step has not made yet)."""
        state = {v.name: np.array(v.get_value()) for v in self.state_variables()}
        for name, value in getattr(self, "_pending_velocities", {}).items():
            state.setdefault(name, np.array(value))
        return state

    def set_state(self, values, strict=True):
        """Load arrays by name (shapes must match); with ``strict`` every trained
        parameter must be present.

        Momentum values whose variables do not exist yet (``sgd`` makes them when
        the train step is built, which in the JAX mode is at its first call, once
        its row counts are known) are kept and loaded the moment they are made
        (``_velocities_made``), so a resumed run never restarts its momentum."""
        known = {v.name for v in self.state_variables()}
        self._pending_velocities = {k: np.array(v) for k, v in values.items()
                                    if k not in known and k.endswith(".velocity")}
        _load_state(self.state_variables(), self._trained(), values, strict, self._OWNER)

    def _velocities_made(self):
        """Called by ``_build`` right after ``sgd`` made ``self.velocities``: load
        the momentum a ``set_state`` kept for them."""
        pending = getattr(self, "_pending_velocities", None)
        if pending:
            _load_state(self.velocities, [], pending, False, self._OWNER)
            made = {v.name for v in self.velocities}
            self._pending_velocities = {k: v for k, v in pending.items() if k not in made}
