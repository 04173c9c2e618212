"""The VAE looped into a Markov chain, unrolled as ONE symbolic scan (SPEC.md section 4).

x0 ~ D; for t = 0 .. T-1:

    x_in_t  = (1 - m) * x_t + m * c          partial control (m = 0: a free chain)
    z_t     = mu_q(x_in_t) + exp(lv_q(x_in_t) / 2) * eps_t
    x_{t+1} = E[p(x | z_t)] = sigmoid(p's output)     (the MEAN is fed back, as in the 2015 code)

Step t also yields the two terms of its free energy (Eq. 2) on the pair (target, z_t):
``nll_t = -log p(target | z_t)`` with target = x_in_t ("walkout": reconstruct the
step's own input) or x_in_0 ("walkback": reconstruct the start), and
``kl_t = KL(q(z | x_in_t) || N(0, I))``.

All noise comes in from outside: ``eps`` is a (T, rows, z_dim) scan sequence drawn on
the host, so a compiled function holds no hidden random state.

Two ways to get gradients through the T steps (BPTT)
----------------------------------------------------
- ``grad(cost, params)`` through the scan (autodiff). Aesara / PyTensor build the
  backward scan from the step's inner graph, so every step's forward pass is computed
  TWICE (once in the forward scan, once more inside the backward scan) - a third
  more arithmetic than an unrolled graph, which is most of scan's overhead.
- ``vgsn.model.bptt.chain_gradients`` (the default of ``VCGLoop``): the forward scan
  stores each step's layer activations (``store=True``) and a backward scan over
  them emits each layer's delta; no forward recomputation (see that module).

``unroll='python'`` builds the same step T times in a Python loop (a reference,
and the baseline of ``benchmarks/bench_chain.py``). The compiled sampler is
``OneStageModel.run_chain`` (built in the model's ``_build``).
"""
import inspect
from collections import namedtuple

import numpy as np

from vgsn.model import objectives as obj
from vgsn.backend import T, floatX, scan
from vgsn.model.options import UNROLLS, check

ChainGraph = namedtuple("ChainGraph", ["states", "nll", "kl", "stored", "info"])
ChainGraph.__doc__ = """Symbolic outputs of ``chain_forward``.

states : (T, rows, x_dim) the step outputs x_1 .. x_T (before the next step's control)
nll, kl : (T, rows) per-step free-energy terms
stored : dict of (T, ...) per-step activations (``store=True``), else None
info : dict of what ``chain_gradients`` needs (inputs, flags)
"""


# PyTensor's scan is moving to returning only the outputs (``return_updates=False``);
# Aesara's always returns (outputs, updates). The chain's scans have no updates.
_SCAN_TAKES_RETURN_UPDATES = "return_updates" in inspect.signature(scan).parameters


def scan_outputs(fn, **kwargs):
    """``scan`` returning only its outputs (the chain's scans make no updates)."""
    if _SCAN_TAKES_RETURN_UPDATES:
        return scan(fn, return_updates=False, **kwargs)
    outputs, updates = scan(fn, **kwargs)
    if updates:
        raise RuntimeError("the chain's scan made random-state updates; all noise must be inputs")
    return outputs


def step_weights(steps, decay):
    """Weights decay^t of the per-step VAE costs, t = 0..steps-1, normalised to sum to 1.

    decay = 0 puts all weight on step 0 (0**0 = 1), as the 2015 MNIST script did.

    Returns
    -------
    ndarray (steps,) float32
    """
    steps, decay = int(steps), float(decay)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not (np.isfinite(decay) and decay >= 0.0):
        raise ValueError(f"step decay must be a finite number >= 0, got {decay}")
    w = np.array([decay ** t if t else 1.0 for t in range(steps)], np.float64)
    return (w / w.sum()).astype(floatX)


def apply_control(x, mask=None, control=None):
    """Partial control: (1 - m) * x + m * c (m = 1 clamps a pixel to c); x when mask is None."""
    if mask is None:
        return x
    if control is None:
        raise ValueError("a mask needs a control image (the values clamped pixels take)")
    return (np.float32(1.0) - mask) * x + mask * control


def control_arrays(X0, mask=None, control=None):
    """The float32 (rows, x_dim) mask and control arrays for a chain from ``X0``.

    No mask: zeros for both (a free chain). A mask (values in [0, 1]) and the
    control broadcast to X0's shape; the control defaults to X0 (inpainting).
    """
    def full(a, what):
        a = np.asarray(a, dtype=floatX)
        try:
            return np.ascontiguousarray(np.broadcast_to(a, X0.shape))
        except ValueError:
            raise ValueError(f"{what} of shape {a.shape} does not broadcast to X0's {X0.shape}") from None

    if mask is None:
        if control is not None:
            raise ValueError("control was given without a mask")
        return np.zeros_like(X0), np.zeros_like(X0)
    M = full(mask, "mask")
    if M.min() < 0 or M.max() > 1:
        raise ValueError("mask values must lie in [0, 1]")
    return M, full(X0 if control is None else control, "control")


def _n_acts(model):
    """Number of stored activation tensors per step (see ``flat_activations``)."""
    return 5 + len(model.q.hidden_layers) + len(model.p.hidden_layers)


def _step_graph(model, x_t, eps_t, mask, control, target0):
    """One chain step (symbolic). Returns (x_next, nll, kl, activations dict)."""
    x_in = apply_control(x_t, mask, control)
    q = model.q.forward(x_in)
    z = obj.reparameterise(q.mean, q.logvar, eps_t)        # z ~ q(z | x_in)
    p = model.p.forward(z)
    x_next = T.sigmoid(p.mean)                             # E[p(x|z)], fed back as the next state
    target = x_in if target0 is None else target0          # walkout / walkback (Sec. 4, Alg. 1)
    nll = -model.log_px_of_logits(target, p.mean)
    kl = T.sum(obj.gaussian_kl(q.mean, q.logvar), axis=1)
    acts = dict(x_in=x_in, hq=q.hidden, mu=q.mean, lv=q.logvar, z=z, hp=p.hidden, logits=p.mean)
    return x_next, nll, kl, acts


def flat_activations(acts):
    """A step's activations dict as the flat list scan carries (the inverse of
    ``unflat_activations``)."""
    return [acts["x_in"], *acts["hq"], acts["mu"], acts["lv"], acts["z"], *acts["hp"], acts["logits"]]


def unflat_activations(model, seq):
    """The activations dict (x_in, hq, mu, lv, z, hp, logits) of a flat list."""
    nq, npl = len(model.q.hidden_layers), len(model.p.hidden_layers)
    seq = list(seq)
    x_in, hq = seq[0], seq[1:1 + nq]
    mu, lv, z = seq[1 + nq:4 + nq]
    hp = seq[4 + nq:4 + nq + npl]
    logits = seq[4 + nq + npl]
    return dict(x_in=x_in, hq=hq, mu=mu, lv=lv, z=z, hp=hp, logits=logits)


def chain_forward(model, x0, eps, mask=None, control=None, walkback=False, store=False,
                  unroll="scan", steps=None):
    """The unrolled chain x0 -> z0 -> x1 -> ... -> x_T as symbolic outputs.

    Parameters
    ----------
    model : OneStageModel
    x0 : symbolic (rows, x_dim) starting states
    eps : symbolic (T, rows, z_dim) standard normal noise, one slice per step
    mask, control : symbolic (rows, x_dim) or broadcastable, optional
        Partial control applied before every step (mask 1 = clamp to control).
    walkback : bool
        nll_t reconstructs x_in_0 at every step (walkback) instead of x_in_t (walkout).
    store : bool
        Also return every step's activations (needed by ``chain_gradients``).
    unroll : {'scan', 'python'}
        'python' builds the step ``steps`` times in a Python loop (a reference).
    steps : int, optional (required by ``unroll='python'``)
        The number of steps as a Python int: the scan's length is then static (XLA
        needs it). None: T is eps's length (one graph serves any T).

    Returns
    -------
    ChainGraph
    """
    check("unroll", unroll, UNROLLS)
    params = list(model.params)
    x0_in = apply_control(x0, mask, control)
    target0 = x0_in if walkback else None
    nonseq = [v for v in (mask, control, target0) if v is not None]

    def step(eps_t, x_t, *_):
        # The non-sequences arrive as themselves (params, mask, control, x0); the graph
        # refers to them directly, and strict=True checks nothing else leaks in.
        x_next, nll, kl, acts = _step_graph(model, x_t, eps_t, mask, control, target0)
        outs = [x_next, nll, kl]
        if store:
            outs += flat_activations(acts)
        return outs

    if unroll == "scan":
        n_extra = _n_acts(model) if store else 0
        # n_steps given explicitly (an int, or a plain input's shape): otherwise scan
        # takes the min of every sequence's length, a shape graph later scans re-infer.
        n_steps = eps.shape[0] if steps is None else int(steps)
        outs = scan_outputs(step, sequences=[eps], outputs_info=[x0] + [None] * (2 + n_extra),
                            non_sequences=nonseq + params, n_steps=n_steps, strict=True,
                            name="chain_forward")
    else:                                                   # 'python'
        if steps is None:
            raise ValueError("unroll='python' needs the number of steps")
        per_step, x_t = [], x0
        for t in range(steps):
            o = step(eps[t], x_t)
            per_step.append(o)
            x_t = o[0]
        outs = [T.stack([o[i] for o in per_step]) for i in range(len(per_step[0]))]
    states, nll, kl = outs[0], outs[1], outs[2]
    stored = None
    if store:
        stored = unflat_activations(model, outs[3:])
        stored["eps"] = eps
    info = dict(x0=x0, x0_in=x0_in, mask=mask, control=control, walkback=bool(walkback),
                steps=None if steps is None else int(steps))
    return ChainGraph(states, nll, kl, stored, info)
