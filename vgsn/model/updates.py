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

from vgsn.backend import Apply, Op, T, disconnected_grad, floatX, register_op, shared


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
            if hasattr(type(self), name) or name.startswith("_"):
                raise ValueError(f"{name!r} cannot name a hyperparameter (it is a method name)")
            var = shared(np.asarray(value, floatX), name=f"{prefix}.{name}")
            self._vars[name] = var
            # A plain attribute (no __getattr__ lookup): ``hp.lam_kl`` is the shared
            # variable itself, so a reader follows a name straight into the graph.
            object.__setattr__(self, name, var)

    def __getattr__(self, name):
        # Only reached for an unknown name (known ones are plain attributes): say which exist.
        raise AttributeError(
            f"no hyperparameter {name!r}; known: {', '.join(self._vars)}")

    def var(self, name):
        """The shared variable ``name`` (``AttributeError`` naming the known ones)."""
        try:
            return self._vars[name]
        except KeyError:
            raise AttributeError(
                f"no hyperparameter {name!r}; known: {', '.join(self._vars)}") from None

    def __setattr__(self, name, value):
        raise AttributeError(f"use .set({name}=...) to change a hyperparameter")

    def __getitem__(self, name):
        return float(self.var(name).get_value())

    def __contains__(self, name):
        return name in self._vars

    def names(self):
        return list(self._vars)

    def variables(self):
        """The shared scalars, in the order they were given (part of a model's state)."""
        return list(self._vars.values())

    def set(self, **values):
        for name, value in values.items():
            value = float(value)
            if not np.isfinite(value):
                raise ValueError(f"hyperparameter {name} must be finite, got {value}")
            self.var(name).set_value(np.asarray(value, floatX))

    def values(self):
        """dict name -> float of the current values."""
        return {name: self[name] for name in self._vars}


class SumSquares(Op):
    """``sum(x ** 2)`` over every element of a float tensor, as one BLAS dot
    product of the flattened array with itself (a float scalar of x's dtype).

    One multi-threaded read of ``x`` with no temporary: an elementwise square and a
    sum are two single-threaded passes and a full-size temporary (~10x slower on a
    1500 x 1500 weight). Its own small Op rather than ``dot(v, v)``: the backend
    rewrites a vector dot into a GEMV on a fresh empty buffer, and many such
    buffers make the graph's merge pass quadratic (a minute of compile time for
    the chain's update). Accumulates in float32 like the BLAS (relative error
    ~1e-5 on 2M elements); its gradient is ``2 x``.
    """

    __props__ = ()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        return Apply(self, [x], [T.scalar(dtype=x.dtype)])

    def perform(self, node, inputs, output_storage):
        v = np.ravel(inputs[0])
        output_storage[0][0] = np.asarray(np.dot(v, v), dtype=node.outputs[0].dtype)

    def infer_shape(self, *args):
        # Aesara passes (fgraph, node, shapes), PyTensor (node, shapes): a scalar either way.
        return [()]

    def grad(self, inputs, output_grads):
        (x,), (gz,) = inputs, output_grads
        return [T.cast(2.0 * gz, x.dtype) * x]

    def pullback(self, inputs, outputs, output_grads):
        # PyTensor 3's name for the gradient (Aesara calls ``grad``).
        return self.grad(inputs, output_grads)


def _sum_squares_jax(op, node):
    # XLA fuses the square into the reduction: one pass, no temporary (what the C
    # version gets from the BLAS dot).
    import jax.numpy as jnp

    def sum_squares(x):
        return jnp.sum(jnp.square(x))
    return sum_squares


def _sum_squares_numba(op, node):
    # One pass over the elements in any memory layout, accumulated in float64 (the
    # order differs from the BLAS dot's; the result agrees to float32 rounding).
    import numba
    out_dtype = np.dtype(node.outputs[0].dtype)

    @numba.njit(cache=False, fastmath=False)
    def sum_squares(x):
        acc = 0.0
        for v in np.nditer(x):
            f = v.item()
            acc += f * f
        out = np.empty((), dtype=out_dtype)
        out[()] = acc
        return out
    return sum_squares


# SumSquares in PyTensor's JAX and Numba modes: its own implementation in each rather
# than a different graph per mode, so the C graph stays exactly as it was and one
# graph can be compiled for any mode (registered when the mode is first used).
register_op(SumSquares, jax=_sum_squares_jax, numba=_sum_squares_numba)


def sum_squares(x):
    """``sum(x ** 2)`` over every element (see ``SumSquares``)."""
    return SumSquares()(x)


def clip_norm(g, max_norm):
    """Scale ``g`` down so its L2 norm is at most ``max_norm`` (per tensor)."""
    norm = T.sqrt(sum_squares(g))
    max_norm = np.float32(max_norm)
    return g * T.minimum(np.float32(1.0), max_norm / T.maximum(norm, np.float32(1e-12)))


def l2_penalty(weights, weight):
    """L2 weight decay ``weight * sum_W ||W||^2``: returns ``(value, grads)``.

    ``value`` is the penalty for reporting (it carries no gradient) and ``grads``
    maps each weight to its gradient ``2 * weight * W``, to add to the other
    gradients before clipping. Written out rather than differentiated: the
    backend then folds ``2 * weight * W`` into the weight gradient's GEMM
    (``beta * W + X^T G``) instead of building a full-size temporary.
    """
    if not weights:
        return T.constant(np.float32(0.0)), {}
    value = weight * sum(sum_squares(disconnected_grad(w)) for w in weights)
    return value, {w: (2.0 * weight) * w for w in weights}


def check_momentum(beta):
    """``beta`` as a float, ``ValueError`` unless it is in [0, 1)."""
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {beta}")
    return float(beta)


def sgd(cost_or_grads, params, learning_rate, momentum=0.0, max_norm=10.0, velocities=None,
        velocity_prefix=""):
    """SGD update dictionary with per-tensor norm clipping and 2015-style momentum.

    Parameters
    ----------
    cost_or_grads : symbolic scalar or list of symbolic gradients
    params : list of shared variables
    learning_rate : float or symbolic scalar (e.g. ``HyperParams.lr``)
    momentum : float or symbolic scalar
        beta of m <- beta m + (1 - beta) g. With a plain 0 the velocities are
        skipped entirely (textbook SGD, p <- p - lr g). A float32 shared scalar
        (``HyperParams``) lets a schedule change beta between steps, as the 2015
        code's shared ``mom_1`` did; a float is folded into the graph as a constant.
    max_norm : float or None
        Each gradient tensor is clipped to this L2 norm (10 in the 2015 code).
    velocities : list of shared variables, optional
        Momentum state, one per param (created, zero, when omitted and momentum is
        not a plain 0). Pass the same list to keep state across recompiles.
    velocity_prefix : str
        Prepended to the names of the velocities it makes (``<prefix><param>.velocity``),
        so two owners of momentum on the same parameters keep distinct names.

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
    if isinstance(momentum, (int, float)):
        check_momentum(momentum)
    if max_norm is not None and max_norm <= 0:
        raise ValueError(f"max_norm must be > 0 or None, got {max_norm}")
    plain = isinstance(momentum, (int, float)) and momentum == 0.0 and velocities is None
    if not plain and velocities is None:
        velocities = [shared(np.zeros_like(p.get_value()),
                             name=f"{velocity_prefix}{p.name}.velocity") for p in params]
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
