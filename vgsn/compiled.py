"""The compile and state plumbing ``OneStageModel`` and ``VCGLoop`` share.

Each keeps its compiled functions in a dict by name, built on first use by its own
``_build(name)`` (the one place it builds them), and its state as named shared
variables: trained parameters, momentum (``sgd``'s velocities) and hyperparameters.
"""
import numpy as np

from vgsn.backend import floatX


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
    _OWNER = "model"

    def _build(self, name):
        raise NotImplementedError

    def _trained(self):
        raise NotImplementedError

    def _fn(self, name):
        fn = self._fns.get(name)
        if fn is None:
            fn = self._fns[name] = self._build(name)
        return fn

    def compile(self, names=None):
        """Compile the named functions now (default ``FUNCTIONS``; otherwise each
        compiles on first use)."""
        for name in self.FUNCTIONS if names is None else names:
            self._fn(name)
        return self

    def state_variables(self):
        """Every shared variable of the state, each with a unique name: the trained
        parameters, the momentum (once built) and the hyperparameters."""
        return self._trained() + list(self.velocities) + self.hyper.variables()

    def get_state(self):
        """dict name -> array copy of ``state_variables()``."""
        return {v.name: np.array(v.get_value()) for v in self.state_variables()}

    def set_state(self, values, strict=True):
        """Load arrays by name (shapes must match); with ``strict`` every trained
        parameter must be present."""
        _load_state(self.state_variables(), self._trained(), values, strict, self._OWNER)
