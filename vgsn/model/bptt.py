"""BPTT through the unrolled chain from its stored activations (SPEC.md section 4).

``grad(cost, params)`` through the chain's scan makes the library build a backward
scan from the step's inner graph, which computes every step's forward pass a second
time. ``chain_gradients`` instead reads the activations the forward scan stored
(``chain_forward(..., store=True)``):

- a backward scan over t = T-1 .. 0 carries only dC/dx_{t+1} and emits every dense
  layer's delta (dC/d pre-activation) of step t, and each bias's gradient of the step
  as a GEMV with a ones vector;
- each weight's gradient is then ONE GEMM over all T * rows rows,
  ``dW = sum_t h_in_t^T delta_t``.

No forward recomputation, fewer and larger GEMMs, and a small inner graph (it
compiles several times faster than ``grad``'s expansion). The derivatives it needs
are not written here: each sits beside the formula it differentiates (the
likelihoods, the KL and the reparameterisation in ``vgsn.model.objectives``, the layers'
backward pass and p's bounded log-variance in ``vgsn.model.nets``, the ReLU in
``vgsn.model.layers``). ``tests/test_chain.py`` checks the result against ``grad`` of a
Python unroll (Bernoulli and Gaussian, walkout and walkback, with control).
"""
import numpy as np

from vgsn.model import objectives as obj
from vgsn.backend import T
from vgsn.model.chain import flat_activations, scan_outputs, unflat_activations


def _flat(x):
    """(T, rows, d) -> (T * rows, d)."""
    return x.reshape((x.shape[0] * x.shape[1], x.shape[2]))


def _output_grads(model, target, logits, s, g_out, gn):
    """Step t's output: x_{t+1} = s = sigmoid(logits) and nll_t = -log p(target | logits).

    Returns (dC/dlogits, dC/dtarget, dC/d p's shared log-variance b or None) from
    g_out = dC/dx_{t+1} (rows, x_dim) and gn = dC/dnll_t (rows,).
    """
    gn_col = gn.dimshuffle(0, "x")
    ds = s * (np.float32(1.0) - s)                                # the sigmoid's derivative
    if model.x_type == "gaussian":
        # the mean is s; p's log-variance is ONE bounded scalar B tanh(b / B)
        d_x, d_mean, d_lv = obj.gaussian_log_prob_grad(target, s, model.p.shared_logvar())
        g_lvp = -T.sum(gn * T.sum(d_lv, axis=1))
        return ((g_out - gn_col * d_mean) * ds, -gn_col * d_x,
                g_lvp * model.p.shared_logvar_grad())
    d_x, d_logits = obj.bernoulli_log_prob_grad(target, logits)
    return g_out * ds - gn_col * d_logits, -gn_col * d_x, None


def chain_gradients(model, fwd, g_states, g_nll, g_kl):
    """BPTT from stored activations: d cost / d (q and p parameters).

    The cost C is any function of the chain's outputs; its gradients with respect to
    them come in as ``g_states`` = dC/d states (T, rows, x_dim), ``g_nll`` and
    ``g_kl`` = dC/d nll, dC/d kl (T, rows) (compute them with ``grad`` on C w.r.t.
    ``fwd.states``, ``fwd.nll``, ``fwd.kl``; pass None for a disconnected one).

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
    mask, walkback = info["mask"], info["walkback"]
    gaussian = model.x_type == "gaussian"
    q, p = model.q, model.p
    params = list(model.params)
    seqs = [g_states, g_nll, g_kl, st["eps"]] + flat_activations(st)
    nonseq = [v for v in (mask, info["x0_in"] if walkback else None) if v is not None]

    def back(g_ext, gn, gk, eps_t, *rest):
        acts = unflat_activations(model, rest[:len(seqs) - 4])
        g_carry = rest[len(seqs) - 4]
        x_in, mu, lv = acts["x_in"], acts["mu"], acts["lv"]
        target = info["x0_in"] if walkback else x_in
        g_out = g_ext + g_carry                                   # dC/dx_{t+1}
        s = T.sigmoid(acts["logits"])
        g_logits, g_target, g_b = _output_grads(model, target, acts["logits"], s, g_out, gn)
        if walkback:
            g_target = None                                       # x0 is data: no gradient
        g_z, deltas_p = p.backward(acts["hp"], g_logits)          # p: back to z
        # z = mu + exp(lv / 2) eps, and kl_t = sum KL(q(z|x_in) || N(0, I)).
        g_mu, g_lv = obj.reparameterise_grad(g_z, lv, eps_t)
        d_mu, d_lv = obj.gaussian_kl_grad(mu, lv)
        gk_col = gk.dimshuffle(0, "x")
        g_mu, g_lv = g_mu + gk_col * d_mu, g_lv + gk_col * d_lv
        g_xin, deltas_q = q.backward(acts["hq"], g_mu, g_lv)      # q: back to x_in
        if g_target is not None:
            g_xin = g_xin + g_target
        g_x = g_xin if mask is None else g_xin * (np.float32(1.0) - mask)   # dC/dx_t
        deltas = deltas_q + deltas_p
        # bias gradients of this step: column sums as GEMVs with a ones vector (a C
        # column-sum of the stacked deltas is ~25x slower; doing it here, in the small
        # inner graph, also spares the outer graph's rewriting)
        ones = T.alloc(np.float32(1.0), g_out.shape[0])
        outs = [g_x] + deltas + [T.dot(ones, d) for d in deltas]
        if gaussian:
            outs.append(g_b)
        return outs

    layers = q.dense_layers + p.dense_layers           # in the order of the deltas
    n_deltas = len(layers)
    n_out = 1 + 2 * n_deltas + (1 if gaussian else 0)
    steps = info["steps"]
    outs = scan_outputs(back, sequences=seqs,
                        outputs_info=[T.zeros_like(info["x0"])] + [None] * (n_out - 1),
                        non_sequences=nonseq + params,
                        n_steps=st["eps"].shape[0] if steps is None else steps,
                        go_backwards=True, strict=True, name="chain_backward")
    inputs = q.layer_inputs(st["x_in"], st["hq"]) + p.layer_inputs(st["z"], st["hp"])
    # outs are in processing order t = T-1 .. 0: reverse the deltas back to time order
    # so they pair with the stored inputs; dW = sum_t h_in_t^T delta_t is one GEMM.
    deltas = [o[::-1] for o in outs[1:1 + n_deltas]]
    step_bias = outs[1 + n_deltas:1 + 2 * n_deltas]
    grads = {}
    for layer, h_in, delta, b_t in zip(layers, inputs, deltas, step_bias):
        grads[layer.W] = T.dot(_flat(h_in).T, _flat(delta))
        grads[layer.b] = T.sum(b_t, axis=0)
    if gaussian:
        grads[p.logvar_param] = T.sum(outs[-1])
    missing = [v.name for v in params if v not in grads]
    if missing:
        raise ValueError(f"chain_gradients does not know how to reach: {', '.join(missing)}")
    return grads
