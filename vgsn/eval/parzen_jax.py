"""The Gaussian Parzen log-likelihood on a JAX device (``engine='jax'`` of
:func:`vgsn.eval.parzen.parzen_log_likelihood`).

The same estimator as the numpy path of :mod:`vgsn.eval.parzen`, on whatever device
jax computes on (a GPU with jax's CUDA wheels, else the CPU): the data centred on
the centres' mean, ``h = ||c||^2 - 2 x.c`` by one GEMM per (rows, centres) block,
a running log-sum-exp over the centre blocks (each row's smallest ``h`` so far and
the sums of ``exp(-(h - h_min) / (2 sigma^2))``, rescaled when the minimum falls, so
nothing overflows), every sigma sharing one distance block. ``||x||^2``, the
logarithm and ``- log n_c - dims/2 log(2 pi sigma^2)`` are added on the host in
float64, as the numpy path does.

Precision: float32 on the device (jax's default; ``jax_enable_x64`` is left as the
process has it, since flipping it would change every other jax computation). The
GEMM asks for ``Precision.HIGHEST``: on a GPU the default float32 product may run
in TF32 (a 10-bit mantissa), which would cost thousands of nats at sigma = 0.1. The
cancellation in the expansion costs up to about
``1e-7 * (||x||^2 + ||c||^2) / (2 sigma^2)`` nats per row, the numpy float32
path's error. The sums are kept as carefully as float32 allows: partial sums of
:data:`GROUP` terms, then their sum, within a block (worst-case relative error
``(GROUP + block / GROUP) eps``, not ``block * eps``), and a compensated (Kahan)
sum across blocks.

Compiles: one jitted block function, :func:`_step`, with static block shapes: the
last block of rows is padded with zero rows (their results are dropped) and the
last block of centres with zero centres whose ``||c||^2`` is ``+inf``, so their
exponents are ``-inf`` and their terms exactly 0. jax compiles it once per (rows
block, centres block, dims, number of sigmas); the sigma values are arguments.

Imported only when the jax engine is asked for: ``vgsn`` imports without jax.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["log_likelihood", "block_shape", "device_name", "platform", "GROUP", "TRACES"]

#: Terms summed together before the partial sums are added (see the module docstring).
GROUP = 128
#: Default (rows, centres) block per platform: a GPU wants big GEMMs; on a CPU a
#: 1024 x 2048 float32 block (8 MB) keeps the exponentials near the cache.
_BLOCKS = {"cpu": (1024, 2048), "gpu": (4096, 8192), "tpu": (4096, 8192)}
#: Times :func:`_step` has been traced (jax traces once per compile): for tests.
TRACES = [0]


def platform():
    """jax's default platform: ``'cpu'``, ``'gpu'`` or ``'tpu'``."""
    return jax.default_backend()


def device_name(device=None):
    """The device as ``vgsn.backend.devices`` names it: ``'cpu'``, ``'cuda:0 (NVIDIA H200)'``."""
    d = device if device is not None else jax.devices()[0]
    if d.platform == "cpu":
        return "cpu"
    kind = getattr(d, "device_kind", "")
    return f"{d.platform}:{d.id}" + (f" ({kind})" if kind else "")


def _pow2_at_least(n):
    return 1 << max(0, int(n) - 1).bit_length()


def block_shape(n_rows, n_centres, block_rows=None, block_centres=None, plat=None):
    """The static (rows, centres) block :func:`log_likelihood` uses.

    Rows: ``block_rows`` (default per platform), or the next power of two >= the
    rows when there are fewer (at least 8). Centres: ``block_centres``, rounded up to
    a multiple of :data:`GROUP` when above it, or for fewer centres than that the next
    multiple of :data:`GROUP` (a power of two up to :data:`GROUP`). A handful of
    shapes, so a handful of compiles, whatever the sizes.
    """
    d_rows, d_cols = _BLOCKS.get(plat or platform(), _BLOCKS["cpu"])
    rb, cb = int(block_rows or d_rows), int(block_centres or d_cols)
    if rb < 1 or cb < 1:
        raise ValueError(f"block sizes must be >= 1; got block_rows={block_rows}, "
                         f"block_centres={block_centres}")
    rb = min(rb, max(8, _pow2_at_least(n_rows)))
    cb = min(cb, int(n_centres))
    if cb <= GROUP:
        cb = _pow2_at_least(cb)
    else:
        cb = -(-cb // GROUP) * GROUP
    return rb, cb


def _step(Xm2, C, c_norm, k, h_min, s, comp):
    """Fold one (rows, centres) block into a row block's running log-sum-exp.

    Parameters (float32 device arrays)
    ----------
    Xm2 : (rb, dims)
        ``-2 x`` of the centred rows (scaling by -2 is exact).
    C : (cb, dims)
        The centred centres of this block.
    c_norm : (cb,)
        Their ``||c||^2``; ``+inf`` for padding.
    k : (n_sigmas,)
        ``-1 / (2 sigma^2)``.
    h_min : (rb,)
        Each row's smallest ``h = ||c||^2 - 2 x.c`` so far (``+inf`` before the first block).
    s, comp : (n_sigmas, rb)
        The sums of ``exp(k (h - h_min))`` so far and their Kahan compensation
        (the sum is ``s - comp``).

    Returns
    -------
    h_min, s, comp : the updated state.
    """
    TRACES[0] += 1  # Python side effect: runs when jax traces, not when it runs
    G = lax.dot_general(Xm2, C, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST)
    H = G + c_norm[None, :]
    new = jnp.minimum(h_min, H.min(axis=1))
    # Earlier blocks' sums to the new minimum: k < 0 and h_min - new >= 0; before
    # the first block h_min is +inf, the factor exp(-inf) = 0 and s = 0.
    scale = jnp.exp(k[:, None] * (h_min - new)[None, :])
    D = H - new[:, None]                       # >= 0; +inf for padded centres
    E = jnp.exp(k[:, None, None] * D[None])    # (n_sigmas, rb, cb), every term <= 1
    ns, rb, cb = E.shape
    g = min(GROUP, cb)
    part = E.reshape(ns, rb, cb // g, g).sum(axis=-1).sum(axis=-1)
    s, comp = s * scale, comp * scale
    y = part - comp
    t = s + y
    comp = (t - s) - y
    return new, t, comp


_step_jit = jax.jit(_step)


def cache_size():
    """Compiled versions of the block function held by jax (for tests)."""
    return _step_jit._cache_size()


def log_likelihood(centres, X, sigmas, block_rows=None, block_centres=None, device=None):
    """Log-density of each row of ``X`` under the Parzen window, for each sigma (nats).

    Parameters
    ----------
    centres : ndarray (n_centres, dims)
    X : ndarray (rows, dims)
    sigmas : ndarray float64 (n_sigmas,)
        Positive (checked by the caller).
    block_rows, block_centres : int, optional
        The block (:func:`block_shape`); default per platform.
    device : jax.Device, optional
        Default: jax's default device.

    Returns
    -------
    ll : ndarray float64 (rows, n_sigmas)
    """
    centres, X = np.asarray(centres), np.asarray(X)
    sig = np.asarray(sigmas, dtype=np.float64)
    n, dims = X.shape
    n_c, ns = centres.shape[0], sig.size
    if sig.min() < 1e-15:  # -1 / (2 sigma^2) would leave float32's range (inf * 0 = nan)
        raise ValueError(f"sigma {sig.min():g} is too small for the float32 jax engine "
                         "(>= 1e-15); use engine='numpy'")
    out = np.empty((n, ns), dtype=np.float64)
    if n == 0:
        return out
    device = device if device is not None else jax.devices()[0]
    rb, cb = block_shape(n, n_c, block_rows, block_centres, plat=device.platform)

    # Centring on the centres' mean: distances unchanged, norms (and so the
    # cancellation error) smaller. Norms in float64, then rounded once.
    shift = centres.mean(axis=0, dtype=np.float64)
    C = (centres - shift).astype(np.float32)
    n_cb = -(-n_c // cb)
    Cp = np.zeros((n_cb * cb, dims), np.float32)
    Cp[:n_c] = C
    c_norm = np.full(n_cb * cb, np.inf, np.float32)
    c_norm[:n_c] = np.einsum("ij,ij->i", C, C, dtype=np.float64)
    put = lambda a: jax.device_put(a, device)  # noqa: E731
    C_blocks = [put(Cp[j * cb:(j + 1) * cb]) for j in range(n_cb)]
    n_blocks = [put(c_norm[j * cb:(j + 1) * cb]) for j in range(n_cb)]
    k64 = -0.5 / sig ** 2
    k = put(k64.astype(np.float32))
    h0 = put(np.full(rb, np.inf, np.float32))
    s0 = put(np.zeros((ns, rb), np.float32))

    # Every block is dispatched before any result is read: jax runs them
    # asynchronously, so a GPU is kept busy while the host prepares the next rows.
    pending = []
    for r0 in range(0, n, rb):
        r1 = min(n, r0 + rb)
        Xb = (X[r0:r1] - shift).astype(np.float32)
        x_norm = np.einsum("ij,ij->i", Xb, Xb, dtype=np.float64)
        Xp = np.zeros((rb, dims), np.float32)
        Xp[:r1 - r0] = Xb * np.float32(-2)
        Xd = put(Xp)
        h, s, comp = h0, s0, s0
        for j in range(n_cb):
            h, s, comp = _step_jit(Xd, C_blocks[j], n_blocks[j], k, h, s, comp)
        pending.append((r0, r1, x_norm, h, s, comp))

    log_norm = -math.log(n_c) - 0.5 * dims * (math.log(2.0 * math.pi) + 2.0 * np.log(sig))
    for r0, r1, x_norm, h, s, comp in pending:
        m = r1 - r0
        h = np.asarray(h)[:m].astype(np.float64)
        total = np.asarray(s)[:, :m].astype(np.float64) - np.asarray(comp)[:, :m]
        # Clip: the expansion can put the nearest centre a rounding error below 0.
        d_min = np.maximum(h + x_norm, 0.0)
        out[r0:r1] = np.log(total.T) + np.outer(d_min, k64) + log_norm
    return out
