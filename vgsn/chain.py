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
- ``chain_gradients`` (the default of ``VCGLoop``): the forward scan stores each
  step's layer activations (``store=True``), a backward scan carries only dC/dx_t
  and emits each layer's delta, and the weight gradients are then ONE large GEMM
  per weight over all T * rows rows. No forward recomputation, fewer and larger
  GEMMs. The elementwise derivatives (sigmoid, log p(x|z), KL, the
  reparameterisation) are written out, which keeps the backward scan's inner graph
  small (it compiles several times faster than ``grad``'s expansion); the tests
  check the result against ``grad`` of a Python unroll, Bernoulli and Gaussian,
  walkout and walkback, with and without control.

``unroll='python'`` builds the same step T times in a Python loop (a reference,
and the baseline of ``benchmarks/bench_chain.py``).
"""
import inspect
import weakref
from collections import namedtuple

import numpy as np

from vgsn import objectives as obj
from vgsn.backend import T, floatX, function, scan
from vgsn.layers import relu

UNROLLS = ("scan", "python")

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


def _scan(fn, **kwargs):
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


def _n_acts(model):
    """Number of stored activation tensors per step (see ``_flat_acts``)."""
    return 5 + len(model.q.hidden_layers) + len(model.p.hidden_layers)


def _step_graph(model, x_t, eps_t, mask, control, target0):
    """One chain step (symbolic). Returns (x_next, nll, kl, activations dict)."""
    x_in = apply_control(x_t, mask, control)
    h, hq = x_in, []
    for layer in model.q.hidden_layers:
        h = relu(layer.apply(h))
        hq.append(h)
    mu = model.q.mean_head.apply(h)
    lv = model.q.logvar_head.apply(h)
    z = mu + T.exp(np.float32(0.5) * lv) * eps_t          # reparameterised z ~ q(z|x_in)
    h, hp = z, []
    for layer in model.p.hidden_layers:
        h = relu(layer.apply(h))
        hp.append(h)
    logits = model.p.mean_head.apply(h)
    x_next = T.sigmoid(logits)                              # E[p(x|z)], fed back as the next state
    target = x_in if target0 is None else target0          # walkout / walkback (Sec. 4, Alg. 1)
    nll = -model.log_px_of_logits(target, logits)
    kl = T.sum(obj.gaussian_kl(mu, lv), axis=1)
    acts = dict(x_in=x_in, hq=hq, mu=mu, lv=lv, z=z, hp=hp, logits=logits)
    return x_next, nll, kl, acts


def _flat_acts(acts):
    return [acts["x_in"], *acts["hq"], acts["mu"], acts["lv"], acts["z"], *acts["hp"], acts["logits"]]


def _unflat_acts(model, seq):
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
    eps : symbolic (T, rows, z_dim) standard normal noise, one slice per step; with
        scan, T is its length (symbolic: one graph serves any T)
    mask, control : symbolic (rows, x_dim) or broadcastable, optional
        Partial control applied before every step (mask 1 = clamp to control).
    walkback : bool
        nll_t reconstructs x_in_0 at every step (walkback) instead of x_in_t (walkout).
    store : bool
        Also return every step's activations (needed by ``chain_gradients``).
    unroll : {'scan', 'python'}
        'python' builds the step ``steps`` times in a Python loop (a reference).
    steps : int, only for ``unroll='python'``

    Returns
    -------
    ChainGraph
    """
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
            outs += _flat_acts(acts)
        return outs

    if unroll == "scan":
        n_extra = _n_acts(model) if store else 0
        # n_steps given explicitly (a plain input's shape): otherwise scan takes the min
        # of every sequence's length, a shape graph that later scans must re-infer.
        outs = _scan(step, sequences=[eps], outputs_info=[x0] + [None] * (2 + n_extra),
                     non_sequences=nonseq + params, n_steps=eps.shape[0], strict=True,
                     name="chain_forward")
    elif unroll == "python":
        if steps is None:
            raise ValueError("unroll='python' needs the number of steps")
        per_step, x_t = [], x0
        for t in range(steps):
            o = step(eps[t], x_t)
            per_step.append(o)
            x_t = o[0]
        outs = [T.stack([o[i] for o in per_step]) for i in range(len(per_step[0]))]
    else:
        raise ValueError(f"unroll must be one of {UNROLLS}, got {unroll!r}")
    states, nll, kl = outs[0], outs[1], outs[2]
    stored = None
    if store:
        stored = _unflat_acts(model, outs[3:])
        stored["eps"] = eps
    info = dict(x0=x0, x0_in=x0_in, mask=mask, control=control, walkback=bool(walkback))
    return ChainGraph(states, nll, kl, stored, info)


def _flat(x):
    """(T, rows, d) -> (T * rows, d)."""
    return x.reshape((x.shape[0] * x.shape[1], x.shape[2]))


def chain_gradients(model, fwd, g_states, g_nll, g_kl):
    """BPTT from stored activations: d cost / d (q and p parameters).

    The cost C is any function of the chain's outputs; its gradients with respect to
    them come in as ``g_states`` = dC/d states (T, rows, x_dim), ``g_nll`` and
    ``g_kl`` = dC/d nll, dC/d kl (T, rows) (compute them with ``grad`` on C w.r.t.
    ``fwd.states``, ``fwd.nll``, ``fwd.kl``; pass None for a disconnected one).

    A backward scan over t = T-1 .. 0 carries dC/dx_{t+1} and emits the delta
    (dC/d pre-activation) of every layer; each weight's gradient is then one GEMM
    over all T * rows rows: dW = sum_t h_in_t^T delta_t.

    Parameters
    ----------
    model : OneStageModel
    fwd : ChainGraph from ``chain_forward(..., store=True)``

    Returns
    -------
    dict {shared parameter: symbolic gradient} for every parameter of q and p.
    """
    if fwd.stored is None:
        raise ValueError("chain_gradients needs chain_forward(..., store=True)")
    st, info = fwd.stored, fwd.info
    zeros_tr = T.zeros_like(fwd.nll)
    g_states = T.zeros_like(fwd.states) if g_states is None else g_states
    g_nll = zeros_tr if g_nll is None else g_nll
    g_kl = zeros_tr if g_kl is None else g_kl
    mask, control, walkback = info["mask"], info["control"], info["walkback"]
    gaussian = model.x_type == "gaussian"
    q_layers, p_layers = model.q.hidden_layers, model.p.hidden_layers
    params = list(model.params)
    seqs = [g_states, g_nll, g_kl, st["eps"]] + _flat_acts(st)
    nonseq = [v for v in (mask, info["x0_in"] if walkback else None) if v is not None]

    def back(g_ext, gn, gk, eps_t, *rest):
        acts = _unflat_acts(model, rest[:len(seqs) - 4])
        g_carry = rest[len(seqs) - 4]
        x_in, logits, mu, lv = acts["x_in"], acts["logits"], acts["mu"], acts["lv"]
        target = info["x0_in"] if walkback else x_in
        g_out = g_ext + g_carry                                   # dC/dx_{t+1}
        gn_col, gk_col = gn.dimshuffle(0, "x"), gk.dimshuffle(0, "x")
        # Output: x_{t+1} = s = sigmoid(logits), and nll_t = -log p(target | logits).
        # The derivatives are written out (a small inner graph compiles much faster than
        # grad's expansion); tests check them against grad of the objectives.
        s = T.sigmoid(logits)
        ds = s * (np.float32(1.0) - s)
        g_b = None
        if gaussian:
            # nll = 0.5 * sum(log 2pi + lvp + (target - s)^2 exp(-lvp)), lvp = B tanh(b / B)
            inv_var = T.exp(-model.p.shared_logvar())
            resid = target - s
            g_logits = (g_out - gn_col * resid * inv_var) * ds
            g_target = gn_col * resid * inv_var
            d_lvp = T.sum(gn * np.float32(0.5) * T.sum(np.float32(1.0) - T.square(resid) * inv_var, axis=1))
            th = T.tanh(model.p.logvar_param / np.float32(model.p.logvar_bound))
            g_b = d_lvp * (np.float32(1.0) - T.square(th))
        else:
            # nll = -sum(target * logits - softplus(logits))
            g_logits = g_out * ds + gn_col * (s - target)
            g_target = -gn_col * logits
        if walkback:
            g_target = None                                       # x0 is data: no gradient
        # p: back through the mean head and the ReLU layers to z.
        deltas_p = [g_logits]
        g_h = T.dot(g_logits, model.p.mean_head.W.T)
        for i in reversed(range(len(p_layers))):
            g_a = g_h * T.gt(acts["hp"][i], np.float32(0.0))
            deltas_p.insert(0, g_a)
            g_h = T.dot(g_a, p_layers[i].W.T)
        g_z = g_h
        # z = mu + exp(lv / 2) eps, and KL = 0.5 * sum(exp(lv) + mu^2 - 1 - lv).
        g_mu = g_z + gk_col * mu
        g_lv = (g_z * eps_t * np.float32(0.5) * T.exp(np.float32(0.5) * lv)
                + gk_col * np.float32(0.5) * (T.exp(lv) - np.float32(1.0)))
        # q: back through both heads and the ReLU layers to x_in.
        g_h = T.dot(g_mu, model.q.mean_head.W.T) + T.dot(g_lv, model.q.logvar_head.W.T)
        deltas_q = []
        for i in reversed(range(len(q_layers))):
            g_a = g_h * T.gt(acts["hq"][i], np.float32(0.0))
            deltas_q.insert(0, g_a)
            g_h = T.dot(g_a, q_layers[i].W.T)
        g_xin = g_h if g_target is None else g_h + g_target
        g_x = g_xin if mask is None else g_xin * (np.float32(1.0) - mask)   # dC/dx_t
        outs = [g_x] + deltas_q + [g_mu, g_lv] + deltas_p
        # bias gradients of this step: column sums as GEMVs with a ones vector (a C
        # column-sum of the stacked deltas is ~25x slower; doing it here, in the small
        # inner graph, also spares the outer graph's rewriting)
        ones = T.alloc(np.float32(1.0), g_out.shape[0])
        outs += [T.dot(ones, d) for d in deltas_q + [g_mu, g_lv] + deltas_p]
        if gaussian:
            outs.append(g_b)
        return outs

    n_deltas = len(q_layers) + 2 + len(p_layers) + 1
    n_out = 1 + 2 * n_deltas + (1 if gaussian else 0)
    x0 = info["x0"]
    outs = _scan(back, sequences=seqs, outputs_info=[T.zeros_like(x0)] + [None] * (n_out - 1),
                 non_sequences=nonseq + params, n_steps=st["eps"].shape[0], go_backwards=True,
                 strict=True, name="chain_backward")
    # Every dense layer of the step, in the order of the deltas, with its input.
    layers = (list(q_layers) + [model.q.mean_head, model.q.logvar_head] + list(p_layers)
              + [model.p.mean_head])
    inputs = ([st["x_in"]] + st["hq"][:-1] + [st["hq"][-1], st["hq"][-1]]
              + [st["z"]] + st["hp"][:-1] + [st["hp"][-1]])
    # outs are in processing order t = T-1 .. 0: reverse the deltas back to time order
    # so they pair with the stored inputs; dW = sum_t h_in_t^T delta_t is one GEMM.
    deltas = [o[::-1] for o in outs[1:1 + n_deltas]]
    step_bias = outs[1 + n_deltas:1 + 2 * n_deltas]
    grads = {}
    for layer, h_in, delta, b_t in zip(layers, inputs, deltas, step_bias):
        grads[layer.W] = T.dot(_flat(h_in).T, _flat(delta))
        grads[layer.b] = T.sum(b_t, axis=0)
    if gaussian:
        grads[model.p.logvar_param] = T.sum(outs[-1])
    missing = [p.name for p in params if p not in grads]
    if missing:
        raise ValueError(f"chain_gradients does not know how to reach: {', '.join(missing)}")
    return grads


# ---- sampling -----------------------------------------------------------------
# One compiled sampler per model, dropped with the model.
_RUN_CHAIN_FNS = weakref.WeakKeyDictionary()


def compile_run_chain(model):
    """Compiled ``f(x0, eps, mask, control) -> states (steps + 1, rows, x_dim)``.

    ``states[0]`` is the controlled start and ``states[t]`` the state step t sees
    (control applied), so clamped pixels equal ``control`` in every state. The number
    of steps is ``eps.shape[0]``: one compiled function serves any chain length.
    """
    x0 = T.matrix("x0", dtype=floatX)
    eps = T.tensor3("eps", dtype=floatX)
    mask = T.matrix("mask", dtype=floatX)
    control = T.matrix("control", dtype=floatX)
    fwd = chain_forward(model, x0, eps, mask=mask, control=control)
    states = T.concatenate([fwd.info["x0_in"].dimshuffle("x", 0, 1),
                            apply_control(fwd.states, mask, control)], axis=0)
    return function([x0, eps, mask, control], states, name="run_chain")


def run_chain(model, X0, steps, mask=None, control=None, sigma_scale=1.0, rng=None):
    """Run the chain ``steps`` steps from ``X0`` and return every state.

    Parameters
    ----------
    model : OneStageModel
    X0 : ndarray (rows, x_dim) starting images
    steps : int >= 0
    mask, control : ndarray (rows, x_dim) or (x_dim,), optional
        Partial control: before each step x <- (1 - mask) * x + mask * control.
        ``control`` defaults to X0 (inpainting: clamp the observed pixels).
    sigma_scale : float
        z = mean + sigma_scale * std * eps (1 = the model's own posterior noise).
    rng : numpy.random.Generator, optional (default: the model's ``rng``)

    Returns
    -------
    ndarray (steps + 1, rows, x_dim): states[0] is X0 under control, states[t] the
    state after t steps.
    """
    X0 = np.asarray(X0, dtype=floatX)
    if X0.ndim != 2 or X0.shape[1] != model.x_dim:
        raise ValueError(f"X0 must be a (rows, {model.x_dim}) array, got shape {X0.shape}")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    rows = X0.shape[0]

    def full(a, what):
        a = np.asarray(a, dtype=floatX)
        try:
            return np.ascontiguousarray(np.broadcast_to(a, X0.shape))
        except ValueError:
            raise ValueError(f"{what} of shape {a.shape} does not broadcast to X0's {X0.shape}") from None

    if mask is None:
        if control is not None:
            raise ValueError("control was given without a mask")
        M, C = np.zeros_like(X0), np.zeros_like(X0)
    else:
        M = full(mask, "mask")
        if M.min() < 0 or M.max() > 1:
            raise ValueError("mask values must lie in [0, 1]")
        C = full(X0 if control is None else control, "control")
    if steps == 0:
        return ((1 - M) * X0 + M * C)[None]
    rng = model.rng if rng is None else rng
    eps = rng.standard_normal((steps, rows, model.z_dim), dtype=np.float32)
    if sigma_scale != 1.0:
        eps *= np.float32(sigma_scale)          # z = mu + sigma_scale * std * eps
    fn = _RUN_CHAIN_FNS.get(model)
    if fn is None:
        fn = _RUN_CHAIN_FNS[model] = compile_run_chain(model)
    return fn(X0, eps, M, C)
