"""Dense and maxout layers, noise helpers and the 2015 code's initialisers.

A layer owns its shared variables and its whole job is ``apply(x)``; it can be
applied any number of times (inside ``scan``, on stacked inputs) to different
symbolic inputs with the same parameters. Noise is never drawn inside a layer:
masks and Gaussian noise arrive as inputs, drawn by the caller (see
``vgsn.model.nets.MaxoutGuide.draw_noise``), so one compiled function holds no hidden
random state and a seed reproduces a run exactly.
"""
import threading

import numpy as np

from vgsn.backend import T, floatX, shared
from vgsn.model.noise import pending_jobs


def orthogonal(shape, gain, rng, decompose=True):
    """Orthogonal matrix of ``shape`` (from the SVD of a Gaussian), times ``gain``.

    Parameters
    ----------
    shape : tuple (fan_in, fan_out)
    gain : float
    rng : numpy.random.Generator
    decompose : bool
        False: zeros, for a weight a checkpoint fills next. The Gaussian is drawn all
        the same, so what is drawn from ``rng`` afterwards does not change; only the
        SVD (seconds at the paper's sizes) is skipped.

    Returns
    -------
    ndarray (fan_in, fan_out), float32; its rows (or columns, whichever are fewer)
    are orthonormal before scaling.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"orthogonal init needs a 2-D shape with positive sizes, got {shape}")
    a = rng.standard_normal(shape)
    if not decompose:
        return np.zeros(shape, dtype=floatX)
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    q = u if u.shape == tuple(shape) else vt
    return (gain * q).astype(floatX)


def hidden_bias(n, rng):
    """The 2015 hidden-bias init: 0.2 + N(0, 0.01^2), so ReLUs start mostly active."""
    return (0.2 + 0.01 * rng.standard_normal(n)).astype(floatX)


def _check_dims(**dims):
    for name, value in dims.items():
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class Dense:
    """Affine layer ``x @ W + b``; the nonlinearity belongs to the caller.

    Parameters
    ----------
    n_in, n_out : int
    name : str
        Prefix of the shared variables' names (``<name>.W``, ``<name>.b``).
    W, b : ndarray, optional
        Initial values, shapes (n_in, n_out) and (n_out,); zeros when omitted.
    """

    def __init__(self, n_in, n_out, name, W=None, b=None):
        _check_dims(n_in=n_in, n_out=n_out)
        self.n_in, self.n_out, self.name = int(n_in), int(n_out), name
        W = np.zeros((n_in, n_out), floatX) if W is None else np.asarray(W, floatX)
        b = np.zeros(n_out, floatX) if b is None else np.asarray(b, floatX)
        if W.shape != (n_in, n_out) or b.shape != (n_out,):
            raise ValueError(
                f"{name}: W must be {(n_in, n_out)} and b {(n_out,)}, got {W.shape} and {b.shape}")
        self.W = shared(W, name=f"{name}.W")
        self.b = shared(b, name=f"{name}.b")
        self.params = [self.W, self.b]

    def apply(self, x):
        """(rows, n_in) -> (rows, n_out) linear output."""
        return T.dot(x, self.W) + self.b


class Maxout(Dense):
    """Maxout layer: ``units * pool`` linear units, each output the max of ``pool``
    CONSECUTIVE columns (unit j pools columns j*pool .. j*pool+pool-1, as the 2015
    PeaNet did).

    ``apply(x, pre_noise)`` returns ``(output (rows, units), linear (rows, units*pool))``;
    ``pre_noise``, when given, is added to the linear units before pooling (the
    2015 "bias noise").
    """

    def __init__(self, n_in, units, pool, name, W=None, b=None):
        _check_dims(units=units, pool=pool)
        super().__init__(n_in, units * pool, name, W=W, b=b)
        self.units, self.pool = int(units), int(pool)

    def apply(self, x, pre_noise=None):
        linear = T.dot(x, self.W) + self.b
        if pre_noise is not None:
            linear = linear + pre_noise
        pooled = linear.reshape((linear.shape[0], self.units, self.pool)).max(axis=2)
        return pooled, linear


def relu(x):
    """max(x, 0), written so its gradient at 0 is 0 like Theano's ``T.maximum``."""
    return T.maximum(x, 0.0)


def relu_grad(g_out, out):
    """d cost / d x of ``out = relu(x)`` from ``g_out`` = d cost / d out: ``g_out``
    where the unit is active (out > 0), 0 elsewhere (at x = 0 too, as ``relu``'s own
    gradient). Takes the OUTPUT, which a stored-activation backward pass keeps."""
    return g_out * T.gt(out, np.float32(0.0))


NOISE_BLOCKS = 2            # row blocks of a noise array, each from its own generator
_THREADED_MIN = 1 << 18     # arrays this big fill their blocks in parallel threads


def _fill_rows(rng, shape, fill):
    """A float32 array of ``shape`` filled by ``fill(generator, block)`` in
    ``NOISE_BLOCKS`` row blocks, each from a generator seeded by integers drawn
    from ``rng``: the result depends only on ``rng``'s state (not on the machine),
    and big arrays fill their blocks concurrently (numpy releases the GIL while
    it fills), about 2x faster on two cores for the guide's 3200 x 1200 noise. Inside
    ``vgsn.model.noise.deferred_fills`` the seeds are drawn the same way but the fills are
    queued on a pool (the noise of later updates, drawn while the device computes)."""
    out = np.empty(shape, floatX)
    seeds = rng.integers(0, np.iinfo(np.int64).max, size=NOISE_BLOCKS)
    bounds = np.linspace(0, shape[0], NOISE_BLOCKS + 1).astype(int)
    deferred = pending_jobs()
    if deferred is not None:
        # Drawn ahead (vgsn.model.noise.NoiseAhead): the seeds are drawn, the fills queued.
        pool, jobs = deferred
        jobs.extend(pool.submit(fill, np.random.default_rng(int(seeds[i])),
                                out[bounds[i]:bounds[i + 1]]) for i in range(NOISE_BLOCKS))
        return out

    errors = []

    def work(i):
        try:
            fill(np.random.default_rng(int(seeds[i])), out[bounds[i]:bounds[i + 1]])
        except BaseException as err:      # re-raised below: never return a half-filled array
            errors.append(err)

    if out.size < _THREADED_MIN:
        for i in range(NOISE_BLOCKS):
            work(i)
    else:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(1, NOISE_BLOCKS)]
        for t in threads:
            t.start()
        work(0)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return out


def gaussian_noise(rng, shape, std):
    """``std * N(0, 1)`` float32 noise of ``shape`` (rows first), see ``_fill_rows``."""
    std = np.float32(std)

    def fill(gen, block):
        gen.standard_normal(dtype=np.float32, out=block)
        block *= std
    return _fill_rows(rng, shape, fill)


def dropout_mask(rng, shape, drop):
    """Inverted-dropout mask: 0 with probability ``drop``, else 1/(1-drop) (float32).

    Scaling at training time keeps the expected activation unchanged, so the
    noise-free network needs no rescaling at evaluation. Drawn like
    ``gaussian_noise`` (row blocks from generators seeded by ``rng``).
    """
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {drop}")
    if drop == 0.0:
        return np.ones(shape, floatX)
    scale = np.float32(1.0 / (1.0 - drop))

    def fill(gen, block):
        gen.random(dtype=np.float32, out=block)
        np.multiply(block >= drop, scale, out=block)
    return _fill_rows(rng, shape, fill)


def output_bias_from_mean(x_mean):
    """The 2015 init of p's output bias: logit(0.9 * mean_pixel + 0.05), per pixel."""
    m = 0.9 * np.clip(np.asarray(x_mean, np.float64), 0.0, 1.0) + 0.05
    return np.log(m / (1.0 - m)).astype(floatX)
