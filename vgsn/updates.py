"""SGD as update dictionaries (SPEC.md section 6), and the shared hyperparameters.

``sgd`` returns an ordered ``{shared_variable: new_value}`` mapping that goes
straight into ``function(..., updates=...)``: per-tensor gradient-norm clipping,
then the 2015 code's momentum form

    m <- beta * m + (1 - beta) * g ;   p <- p - lr * m

(beta = 0 is textbook plain SGD, the paper's "plain SGD"; the 2015 scripts ran
beta = 0.5). ``HyperParams`` holds the values a schedule changes between steps
(learning rate, KL weight, ...) as shared scalars in one named collection.
"""
from collections import OrderedDict

import numpy as np

from vgsn.backend import T, floatX, shared


class HyperParams:
    """A small named collection of float32 shared scalars.

    ``hp = HyperParams(lr=5e-4, lam_kl=1.0)``; ``hp.lr`` is the shared variable
    (use it in graphs); ``hp['lr']`` and ``hp.values()`` read numbers;
    ``hp.set(lr=1e-4)`` changes them between steps without recompiling.
    """

    def __init__(self, prefix="hp", **values):
        object.__setattr__(self, "_vars", OrderedDict())
        object.__setattr__(self, "_prefix", prefix)
        for name, value in values.items():
            self._vars[name] = shared(np.asarray(value, floatX), name=f"{prefix}.{name}")

    def __getattr__(self, name):
        try:
            return self._vars[name]
        except KeyError:
            raise AttributeError(
                f"no hyperparameter {name!r}; known: {', '.join(self._vars)}") from None

    def __setattr__(self, name, value):
        raise AttributeError(f"use .set({name}=...) to change a hyperparameter")

    def __getitem__(self, name):
        return float(getattr(self, name).get_value())

    def __contains__(self, name):
        return name in self._vars

    def names(self):
        return list(self._vars)

    def set(self, **values):
        for name, value in values.items():
            value = float(value)
            if not np.isfinite(value):
                raise ValueError(f"hyperparameter {name} must be finite, got {value}")
            getattr(self, name).set_value(np.asarray(value, floatX))

    def values(self):
        """dict name -> float of the current values."""
        return {name: self[name] for name in self._vars}


def clip_norm(g, max_norm):
    """Scale ``g`` down so its L2 norm is at most ``max_norm`` (per tensor)."""
    norm = T.sqrt(T.sum(T.square(g)))
    max_norm = np.float32(max_norm)
    return g * T.minimum(np.float32(1.0), max_norm / T.maximum(norm, np.float32(1e-12)))


def l2_penalty(weights, weight):
    """``weight * sum_W ||W||^2`` over the given weight tensors (L2 weight decay)."""
    if not weights:
        return T.constant(np.float32(0.0))
    return weight * sum(T.sum(T.square(w)) for w in weights)


def sgd(cost_or_grads, params, learning_rate, momentum=0.0, max_norm=10.0, velocities=None):
    """SGD update dictionary with per-tensor norm clipping and 2015-style momentum.

    Parameters
    ----------
    cost_or_grads : symbolic scalar or list of symbolic gradients
    params : list of shared variables
    learning_rate : float or symbolic scalar (e.g. ``HyperParams.lr``)
    momentum : float or symbolic scalar
        beta of m <- beta m + (1 - beta) g. With a plain 0 the velocities are
        skipped entirely (textbook SGD, p <- p - lr g).
    max_norm : float or None
        Each gradient tensor is clipped to this L2 norm (10 in the 2015 code).
    velocities : list of shared variables, optional
        Momentum state, one per param (created, zero, when omitted and momentum is
        not a plain 0). Pass the same list to keep state across recompiles.

    Returns
    -------
    updates : OrderedDict {shared: new value}
    velocities : list of shared variables (empty for plain SGD)
    """
    params = list(params)
    if isinstance(cost_or_grads, (list, tuple)):
        grads = list(cost_or_grads)
        if len(grads) != len(params):
            raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
    else:
        grads = T.grad(cost_or_grads, params)
    if isinstance(momentum, (int, float)) and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if max_norm is not None and max_norm <= 0:
        raise ValueError(f"max_norm must be > 0 or None, got {max_norm}")
    plain = isinstance(momentum, (int, float)) and momentum == 0.0 and velocities is None
    if not plain and velocities is None:
        velocities = [shared(np.zeros_like(p.get_value()), name=f"{p.name}.velocity")
                      for p in params]
    updates = OrderedDict()
    for i, (p, g) in enumerate(zip(params, grads)):
        if max_norm is not None:
            g = clip_norm(g, max_norm)
        if plain:
            step = g
        else:
            m = velocities[i]
            step = momentum * m + (1.0 - momentum) * g
            updates[m] = T.cast(step, m.dtype)
        updates[p] = T.cast(p - learning_rate * step, p.dtype)
    return updates, (velocities or [])
