"""An independent numpy reference of the 2015 code's guided update (the walk phase), noise off.

Written from the authors' Theano code (Philip-Bachman/ICML-2015, commit f1bf969, files
named below as ``File.py:line``) and the paper, NOT from vgsn: numpy only, float64
throughout, no vgsn import, no symbolic library. Gradients are hand-written reverse mode
through the whole unrolled chain (BPTT). ``tests/model/test_ref2015.py`` checks them
against central finite differences of :func:`walk_terms`.

What one 2015 walk-phase update computes (``VCGLoop.__init__``, VCGLoop.py:98-317), with
the guide's noise off (no dropout, no bias noise, no input noise) and the chain's z noise
given as ``eps``:

- chain starts: the ``X0`` rows each repeated ``batch_repeat`` (5) times consecutively,
  ``Xd.repeat(batch_reps, axis=0)`` (VCGLoop.py:545; MnistWalkoutTest.py:258-259,343);
- unrolled chain (VCGLoop.py:174-188): z_t = mu_q(x_t) + exp(lv_q(x_t)/2) * eps_t
  (InfNet.py:406-409,459-467, sigma_scale = 1), x_{t+1} = sigmoid(p's mean head)
  (``xt_transform``, VCGLoop.py:121-129,184), the mean fed back;
- the guide sees ``vertical_stack(Xt, *Xg_chain)`` = [X_data; x_1; ...; x_T]
  (VCGLoop.py:193-194); data rows are indices 0..N_D-1, chain rows the rest
  (VCGLoop.py:153-155);
- guide side ``dn_cost`` (VCGLoop.py:253-254) = ``dw_dn * L_f`` (VCGLoop.py:439-440,446)
  + ``lam_l2a * act_reg_cost`` (PeaNet.py:273,278-288) + ``lam_l2d * mean over ALL stacked
  rows of f^2`` (VCGLoop.py:243-244, NetLayers.py:332);
- generator side ``osm_cost`` (VCGLoop.py:258-264) = ``dw_gn * L_g`` (VCGLoop.py:443,447)
  + ``lam_nll * chain_nll`` + ``lam_kld * chain_kld`` (VCGLoop.py:462-517) +
  ``lam_l2w * sum_p ||p||^2`` over q's and p's parameter lists (VCGLoop.py:519-527);
- the guide's parameters get ``grad(dn_cost)`` only, q/p ``grad(osm_cost)`` only
  (VCGLoop.py:268-281); then each tensor's gradient is clipped to norm 10 and fed to
  momentum SGD (HelperFuncs.py:12-52): NOT done here, gradients are returned before that.

Parameters: a plain dict name -> float64 array (names as vgsn spells its shared
variables, so the two compare key by key)::

    q.h{i}.W (in, H_i), q.h{i}.b (H_i,)    q's ReLU hidden layers, i = 0 .. (any number)
    q.mean.W (H, z),    q.mean.b (z,)      q's mean head (linear)
    q.logvar.W (H, z),  q.logvar.b (z,)    q's log-variance head (linear)
    p.h{i}.W (in, H_i), p.h{i}.b (H_i,)    p's ReLU hidden layers
    p.mean.W (H, x),    p.mean.b (x,)      p's mean head; x_{t+1} = sigmoid(its output)
    p.logvar_b ()                          Gaussian p only: the shared log-variance is
                                           B*tanh(b/B) (OneStageModel.py:127-129; in 2015
                                           b is element 0 of p's sigma-head bias vector)
    guide.h{l}.W (in, U*P), guide.h{l}.b (U*P,)   maxout layers: U outputs, each the max
                                           of P CONSECUTIVE columns (NetLayers.py:54-64)
    guide.out.W (U, 1), guide.out.b (1,)   the VCGLoop's DiscLayer: f = S*tanh((h_L @ W + b)/S),
                                           S = 20 (NetLayers.py:302-337, VCGLoop.py:403-424)
    guide.cls.W (U, C), guide.cls.b (C,)   the PeaNet's own last layer (C = 10 in 2015),
                                           which the chain bypasses: only the activation
                                           penalty sees it (PeaNet.py:278-288); optional

Gradients (:func:`walk_gradients`) come back under the same names: q.* and p.* are
d(generator total)/d param, guide.* are d(guide total)/d param. NOTE: the 2015 code never
updated ``guide.cls.*`` (its ``dn_params`` skip each proto-net's last layer,
VCGLoop.py:231-234), so :data:`FROZEN_2015` lists them; their gradient is still returned.

Left out, as they take no part in the costs' values or in these gradients: each 2015
layer's ``b_in`` / ``s_in`` (in every ``HiddenLayer.params``, NetLayers.py:174-188,257,
never used in a forward pass: in 2015 they only felt the L2 decay), p's sigma head other
than the shared log-variance (decay only), the partial-control mask (zero in training),
the running ``kld_mean`` (VCGLoop.py:310-312, not a cost).

Settings (:data:`DEFAULTS`, the 2015 MNIST walk phase, MnistWalkoutTest.py:238-343)::

    x_type        'bernoulli' | 'gaussian'                      (script: 'bernoulli')
    batch_repeat  consecutive repeats of each X0 row             (5)
    chain_type    'walkout' (step t reconstructs x_t) | 'walkback' (x_0)   ('walkout')
    cost_decay    step t's VAE cost weighs decay**t / sum       (script 0.0; class default 0.1)
    lam_nll       weight of the chain's nll                      (1.0)
    lam_kld       weight of the chain's KL, the paper's lambda   (script 1.2 / 5 / 20)
    lam_l2w       L2 weight decay on q/p                         (1e-4, VCGLoop.py:205)
    l2_on         'all' q/p params (2015) | 'weights' (the .W only)
    l2_logvar_count  times p.logvar_b enters the L2 sum          (2: 2015 lists it twice)
    lam_l2d       guide output penalty                           (0.05)
    lam_l2a       guide activation penalty                       (0.01)
    dw_dn, dw_gn  weights of L_f and L_g                         (25, 25)
    logvar_bound  B of the shared log-variance                   (6.0)
    guide_pool    P                                              (4)
    squash        S of the guide's output                        (20.0)
    guide_loss    'code2015' (0.5 softplus(-+2f)) | 'paper' (Eq. 6, softplus(-+f))
    gen_loss      'elastic' (0.5([-f]_+ + [-f]_+^2), 2015) | 'abs' (Eq. 7)
    act_penalty   'code2015' | 'vgsn' (sum_l mean(a_l^2), no classifier)

The steps T are ``eps.shape[0]``; the chain rows R = ``X0.shape[0] * batch_repeat``.
"""
import itertools

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))

#: Guide parameters the 2015 code never updated (VCGLoop.py:231-234).
FROZEN_2015 = ("guide.cls.W", "guide.cls.b")

DEFAULTS = dict(
    x_type="bernoulli", batch_repeat=5, chain_type="walkout", cost_decay=0.0, lam_nll=1.0,
    lam_kld=1.0, lam_l2w=1e-4, l2_on="all", l2_logvar_count=2, lam_l2d=0.05, lam_l2a=0.01,
    dw_dn=25.0, dw_gn=25.0, logvar_bound=6.0, guide_pool=4, squash=20.0,
    guide_loss="code2015", gen_loss="elastic", act_penalty="code2015")

_CHOICES = dict(x_type=("bernoulli", "gaussian"), chain_type=("walkout", "walkback"),
                l2_on=("all", "weights"), guide_loss=("code2015", "paper"),
                gen_loss=("elastic", "abs"), act_penalty=("code2015", "vgsn"))


def full_settings(settings=None):
    """``DEFAULTS`` updated with ``settings``; unknown keys and bad choices raise."""
    out = dict(DEFAULTS)
    for key, value in (settings or {}).items():
        if key not in DEFAULTS:
            raise KeyError(f"unknown setting {key!r}; known: {sorted(DEFAULTS)}")
        out[key] = value
    for key, allowed in _CHOICES.items():
        if out[key] not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, got {out[key]!r}")
    return out


# =============================================================================
# Scalar functions
# =============================================================================
def softplus(u):
    """log(1 + exp(u)), stable for any u (Theano's ``T.nnet.softplus``)."""
    return np.logaddexp(0.0, u)


def sigmoid(u):
    """1 / (1 + exp(-u)), stable for any u."""
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def softplus_actfun(x, scale=2.0):
    """NetLayers.py:43-47: ``(1/scale) * softplus(scale * x)``, default scale 2 (what
    ``logreg_loss`` calls, so the 2015 guide loss is 0.5 * softplus(2 * (-+f)))."""
    return softplus(scale * x) / scale


# =============================================================================
# Layers: forward and backward, one pair per layer type
# =============================================================================
def dense_forward(x, W, b):
    """Affine layer (NetLayers.py:243): ``x (N, n_in) @ W (n_in, n_out) + b (n_out,)``
    -> (N, n_out)."""
    return x @ W + b


def dense_backward(x, W, g_a):
    """Backward of ``a = x @ W + b`` from ``g_a`` = dC/da (N, n_out).

    Returns (g_x (N, n_in), g_W (n_in, n_out), g_b (n_out,))."""
    return g_a @ W.T, x.T @ g_a, g_a.sum(axis=0)


def relu_forward(a):
    """ReLU (NetLayers.py:38-41, ``T.maximum(0, x)``): (N, n) -> (N, n)."""
    return np.maximum(a, 0.0)


def relu_backward(a, g_h):
    """dC/da of ``h = relu(a)`` from g_h (N, n): g_h where a > 0, else 0."""
    return g_h * (a > 0.0)


def maxout_forward(a, pool):
    """Maxout over groups of ``pool`` CONSECUTIVE columns (NetLayers.py:54-64: the
    strided slices ``input[:, i::pool]`` take column j*pool + i into output j).

    a : (N, U*pool) pre-activations. Returns (h (N, U), argmax (N, U) in 0..pool-1)."""
    n, width = a.shape
    if width % pool:
        raise ValueError(f"maxout: {width} columns do not split into groups of {pool}")
    groups = a.reshape(n, width // pool, pool)
    arg = groups.argmax(axis=2)
    return np.take_along_axis(groups, arg[..., None], axis=2)[..., 0], arg


def maxout_backward(g_h, arg, pool):
    """dC/da (N, U*pool) of maxout from g_h (N, U): each group's gradient goes to its max."""
    n, units = g_h.shape
    g = np.zeros((n, units, pool))
    np.put_along_axis(g, arg[..., None], g_h[..., None], axis=2)
    return g.reshape(n, units * pool)


def squash_forward(u, bound):
    """DiscLayer output (NetLayers.py:326): ``bound * tanh(u / bound)``."""
    return bound * np.tanh(u / bound)


def squash_backward(f, g_f, bound):
    """dC/du of ``f = bound * tanh(u / bound)`` given its output f: g_f * (1 - (f/bound)^2)."""
    return g_f * (1.0 - (f / bound) ** 2)


def bounded_logvar(b, bound):
    """The Gaussian p's shared log-variance ``B * tanh(b / B)`` (OneStageModel.py:128-129)
    and its derivative d/db = 1 - tanh(b/B)^2. Returns (value, derivative)."""
    th = np.tanh(b / bound)
    return bound * th, 1.0 - th * th


# =============================================================================
# Networks: q, p (InfNet.py) and the guide (PeaNet.py + VCGLoop's DiscLayer)
# =============================================================================
def _n_layers(params, prefix):
    n = 0
    while f"{prefix}.h{n}.W" in params:
        n += 1
    if n == 0:
        raise KeyError(f"no {prefix}.h0.W in params")
    return n


def mlp_forward(params, prefix, x):
    """The ReLU hidden layers of q or p (InfNet.py:155-228: ``shared_config``; ReLU
    ``activation``, MnistWalkoutTest.py:124,137). x (N, n_in).

    Returns the cache dict: ``inputs`` (the input of each layer), ``pre`` (pre-activations),
    ``out`` (N, H) the last hidden layer's output."""
    inputs, pre, h = [], [], x
    for i in range(_n_layers(params, prefix)):
        inputs.append(h)
        a = dense_forward(h, params[f"{prefix}.h{i}.W"], params[f"{prefix}.h{i}.b"])
        pre.append(a)
        h = relu_forward(a)
    return dict(inputs=inputs, pre=pre, out=h)


def mlp_backward(params, prefix, cache, g_out, grads):
    """Backward of :func:`mlp_forward` from g_out = dC/d(last hidden output) (N, H);
    adds the layer gradients into ``grads`` and returns dC/dx (N, n_in)."""
    g_h = g_out
    for i in reversed(range(len(cache["pre"]))):
        g_a = relu_backward(cache["pre"][i], g_h)
        g_h, g_W, g_b = dense_backward(cache["inputs"][i], params[f"{prefix}.h{i}.W"], g_a)
        _add(grads, f"{prefix}.h{i}.W", g_W)
        _add(grads, f"{prefix}.h{i}.b", g_b)
    return g_h


def q_forward(params, x):
    """q(z|x): hidden ReLU layers, then the LINEAR mean and log-variance heads
    (``output_mean`` / ``output_logvar`` are the heads' ``linear_output``, InfNet.py:406-407).

    x (N, x_dim) -> cache with ``mu``, ``lv`` (N, z_dim) and the hidden cache ``mlp``."""
    mlp = mlp_forward(params, "q", x)
    h = mlp["out"]
    mu = dense_forward(h, params["q.mean.W"], params["q.mean.b"])
    lv = dense_forward(h, params["q.logvar.W"], params["q.logvar.b"])
    return dict(mlp=mlp, mu=mu, lv=lv)


def q_backward(params, cache, g_mu, g_lv, grads):
    """Backward of :func:`q_forward` from dC/dmu and dC/dlv (N, z_dim); adds into
    ``grads``, returns dC/dx (N, x_dim)."""
    h = cache["mlp"]["out"]
    g_h1, g_W, g_b = dense_backward(h, params["q.mean.W"], g_mu)
    _add(grads, "q.mean.W", g_W)
    _add(grads, "q.mean.b", g_b)
    g_h2, g_W, g_b = dense_backward(h, params["q.logvar.W"], g_lv)
    _add(grads, "q.logvar.W", g_W)
    _add(grads, "q.logvar.b", g_b)
    return mlp_backward(params, "q", cache["mlp"], g_h1 + g_h2, grads)


def p_forward(params, z):
    """p(x|z): hidden ReLU layers, then the linear mean head (InfNet.py:406), whose
    sigmoid is the chain's next state (VCGLoop.py:184). z (N, z_dim) -> cache with
    ``logits`` (N, x_dim) and ``s = sigmoid(logits)``."""
    mlp = mlp_forward(params, "p", z)
    logits = dense_forward(mlp["out"], params["p.mean.W"], params["p.mean.b"])
    return dict(mlp=mlp, logits=logits, s=sigmoid(logits))


def p_backward(params, cache, g_logits, grads):
    """Backward of :func:`p_forward` from dC/dlogits (N, x_dim); returns dC/dz."""
    g_h, g_W, g_b = dense_backward(cache["mlp"]["out"], params["p.mean.W"], g_logits)
    _add(grads, "p.mean.W", g_W)
    _add(grads, "p.mean.b", g_b)
    return mlp_backward(params, "p", cache["mlp"], g_h, grads)


def guide_forward(params, X, pool, squash):
    """The guide, noise off: maxout layers (PeaNet.py:147-199; maxout replaces the ReLU
    when pool > 1, NetLayers.py:218-222), then the VCGLoop's DiscLayer on the last maxout
    output (VCGLoop.py:412-421: its input is ``sn_fl.noisy_input``, the classifier
    layer's input = the last maxout output after that layer's dropout, here none):
    f = S tanh((h_L @ w + c) / S) (NetLayers.py:326). The bypassed classifier layer
    (the proto-net's last layer, 10 linear units, PeaNet.py:176-199) is computed on the
    same input for the activation penalty: cls = h_L @ W_c + b_c.

    X (N, x_dim) -> cache: ``inputs``, ``pre`` (N, U*P), ``arg`` per maxout layer,
    ``h`` (N, U) last maxout output, ``f`` (N,), ``cls`` (N, C) or None."""
    inputs, pre, args, h = [], [], [], X
    for l in range(_n_layers(params, "guide")):
        inputs.append(h)
        a = dense_forward(h, params[f"guide.h{l}.W"], params[f"guide.h{l}.b"])
        h, arg = maxout_forward(a, pool)
        pre.append(a)
        args.append(arg)
    u = dense_forward(h, params["guide.out.W"], params["guide.out.b"])[:, 0]
    cls = None
    if "guide.cls.W" in params:
        cls = h @ params["guide.cls.W"] + params.get("guide.cls.b", 0.0)
    return dict(inputs=inputs, pre=pre, arg=args, h=h, f=squash_forward(u, squash), cls=cls)


def guide_backward(params, cache, g_f, pool, squash, g_pre=None, g_cls=None, grads=None):
    """Backward of :func:`guide_forward`.

    g_f : (N,) dC/df; g_pre : optional list of dC/da_l added directly to each maxout
    layer's pre-activations (the activation penalty); g_cls : optional (N, C) dC/dcls.
    Adds parameter gradients into ``grads`` when given; returns dC/dX (N, x_dim)."""
    grads = {} if grads is None else grads
    g_u = squash_backward(cache["f"], g_f, squash)[:, None]
    g_h, g_W, g_b = dense_backward(cache["h"], params["guide.out.W"], g_u)
    _add(grads, "guide.out.W", g_W)
    _add(grads, "guide.out.b", g_b)
    if g_cls is not None:
        g_hc, g_W, g_b = dense_backward(cache["h"], params["guide.cls.W"], g_cls)
        _add(grads, "guide.cls.W", g_W)
        if "guide.cls.b" in params:
            _add(grads, "guide.cls.b", g_b)
        g_h = g_h + g_hc
    for l in reversed(range(len(cache["pre"]))):
        g_a = maxout_backward(g_h, cache["arg"][l], pool)
        if g_pre is not None:
            g_a = g_a + g_pre[l]
        g_h, g_W, g_b = dense_backward(cache["inputs"][l], params[f"guide.h{l}.W"], g_a)
        _add(grads, f"guide.h{l}.W", g_W)
        _add(grads, f"guide.h{l}.b", g_b)
    return g_h


# =============================================================================
# Cost terms, each with its derivative
# =============================================================================
def bernoulli_nll(target, logits):
    """-log p(target | sigmoid(logits)) per row (LogPDFs.py:38-50 with x_apprx =
    sigmoid(logits)): sum_j softplus(l) - target * l. Grey-level targets allowed.

    Returns (nll (N,), d/dtarget (N, D), d/dlogits (N, D))."""
    nll = np.sum(softplus(logits) - target * logits, axis=1)
    return nll, -logits, sigmoid(logits) - target


def gaussian_nll(target, mean, logvar):
    """-log N(target; mean, exp(logvar)) per row, one scalar logvar for every pixel
    (LogPDFs.py:67-78, ``log_prob_gaussian2`` with ``bounded_logvar``).

    Returns (nll (N,), d/dtarget (N, D), d/dmean (N, D), d/dlogvar (scalar))."""
    r = target - mean
    prec = np.exp(-logvar)
    nll = np.sum(0.5 * (LOG_2PI + logvar + r * r * prec), axis=1)
    d_lv = float(np.sum(0.5 * (1.0 - r * r * prec)))
    return nll, r * prec, -r * prec, d_lv


def gaussian_kl(mu, lv):
    """KL(N(mu, exp(lv)) || N(0, I)) per row (LogPDFs.py:80-89 with prior mean 0 and
    logvar 0, VCGLoop.py:105-106,508-510).

    Returns (kl (N,), d/dmu, d/dlv (N, z))."""
    kl = np.sum(0.5 * (-lv + np.exp(lv) + mu * mu - 1.0), axis=1)
    return kl, mu, 0.5 * (np.exp(lv) - 1.0)


def guide_loss(f_data, f_gen, form="code2015"):
    """The guide's classification loss, each side a mean over its own rows.

    'code2015': ``logreg_loss(data, +1)/N_D + logreg_loss(gen, -1)/N_G``
    (VCGLoop.py:27-36,439-440) with ``softplus_actfun``'s default scale 2
    (NetLayers.py:43-47) = mean_D 0.5 softplus(-2 f) + mean_G 0.5 softplus(2 f);
    its minimiser is f = log(D/G) / 2.
    'paper': Eq. 6, mean_D softplus(-f) + mean_G softplus(f); minimiser f = log(D/G).

    Returns (value, d/df_data (N_D,), d/df_gen (N_G,))."""
    nd, ng = f_data.shape[0], f_gen.shape[0]
    k = 2.0 if form == "code2015" else 1.0
    if form not in ("code2015", "paper"):
        raise ValueError(f"guide loss form must be 'code2015' or 'paper', got {form!r}")
    value = np.mean(softplus_actfun(-f_data, k)) + np.mean(softplus_actfun(f_gen, k))
    return value, -sigmoid(-k * f_data) / nd, sigmoid(k * f_gen) / ng


def generator_loss(f_gen, kind="elastic"):
    """The generator's loss on the chain rows' f.

    'elastic' (2015, VCGLoop.py:45-58,443): (hinge + hinge_sq) / (2 N_G) with
    residual = 0 - f, i.e. mean_G 0.5([-f]_+ + [-f]_+^2); 'abs' (Eq. 7): mean_G [-f]_+.
    The derivative at f = 0 is 0 (Theano's ``residual * (residual > 0)``).

    Returns (value, d/df_gen (N_G,))."""
    ng = f_gen.shape[0]
    neg = np.maximum(-f_gen, 0.0)
    active = f_gen < 0.0
    if kind == "elastic":
        return np.mean(0.5 * (neg + neg * neg)), -0.5 * (1.0 + 2.0 * neg) * active / ng
    if kind == "abs":
        return np.mean(neg), -1.0 * active / ng
    raise ValueError(f"generator loss kind must be 'elastic' or 'abs', got {kind!r}")


def activation_penalty(cache, pool, form="code2015"):
    """The guide's activation penalty, unweighted (times ``lam_l2a`` in the guide cost).

    'code2015': ``PeaNet._act_reg_cost`` (PeaNet.py:278-288; one spawn net) sums each
    spawn layer's ``act_l2_sum = sum(noisy_linear^2) / output.size`` (NetLayers.py:254),
    where ``output`` is the layer's POOLED output: a maxout layer of U groups of P counts
    sum(a^2) / (N*U) = P * mean(a^2); the list includes the bypassed classifier layer
    (C units, no pooling): sum(cls^2) / (N*C). 'vgsn': sum_l mean(a_l^2), no classifier.

    Returns (value, [d/da_l], d/dcls or None)."""
    n = cache["f"].shape[0]
    per_col = 1.0 / pool if form == "vgsn" else 1.0
    value, g_pre = 0.0, []
    for a in cache["pre"]:
        units = a.shape[1] // pool
        scale = per_col / (n * units)
        value += scale * np.sum(a * a)
        g_pre.append(2.0 * scale * a)
    g_cls = None
    if form == "code2015":
        cls = cache["cls"]
        if cls is None:
            raise KeyError("act_penalty='code2015' needs the classifier layer guide.cls.W")
        value += np.sum(cls * cls) / cls.size
        g_cls = 2.0 * cls / cls.size
    elif form != "vgsn":
        raise ValueError(f"activation penalty form must be 'code2015' or 'vgsn', got {form!r}")
    return value, g_pre, g_cls


def l2_penalty(params, st):
    """L2 weight decay on q and p, unweighted: sum_p c_p ||p||^2 over the q.* / p.*
    parameters (VCGLoop.py:519-527: ``sum(par**2)`` over ``gn_params`` and ``in_params``).
    c_p = 1, except p.logvar_b: ``l2_logvar_count`` (2015: 2, because the VCGLoop
    appends ``OSM.output_logvar`` = p's sigma-head bias to ``in_params``, VCGLoop.py:235-236,
    and it is already in ``GN.mlp_params``, InfNet.py:401-402). 'weights' keeps the .W only.

    Returns (value, {name: gradient})."""
    value, grads = 0.0, {}
    for name, p in params.items():
        if not name.startswith(("q.", "p.")):
            continue
        if st["l2_on"] == "weights" and not name.endswith(".W"):
            continue
        c = float(st["l2_logvar_count"]) if name == "p.logvar_b" else 1.0
        value += c * float(np.sum(p * p))
        grads[name] = 2.0 * c * p
    return value, grads


def step_weights(steps, decay):
    """Per-step VAE cost weights decay^t / sum (VCGLoop.py:472-488: step_weight starts at
    1 and is multiplied by cost_decay each step), (steps,)."""
    w = np.array([decay ** t if t else 1.0 for t in range(steps)], dtype=np.float64)
    return w / w.sum()


# =============================================================================
# The walk phase: forward pass and terms
# =============================================================================
def _add(grads, name, g):
    if name in grads:
        grads[name] = grads[name] + g
    else:
        grads[name] = np.array(g, dtype=np.float64, copy=True)


def _as64(a, ndim, what):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dims, got shape {a.shape}")
    return a


def _forward(params, X0, X_data, eps, st):
    """The whole forward pass; returns (terms dict, cache for the backward pass)."""
    X0 = _as64(X0, 2, "X0")
    X_data = _as64(X_data, 2, "X_data")
    eps = _as64(eps, 3, "eps")
    steps, rows = eps.shape[0], X0.shape[0] * int(st["batch_repeat"])
    if eps.shape[1] != rows:
        raise ValueError(f"eps has {eps.shape[1]} rows, the chain {rows} "
                         f"({X0.shape[0]} starts x {st['batch_repeat']} repeats)")
    gaussian = st["x_type"] == "gaussian"
    lv_x = dlv_db = None
    if gaussian:
        lv_x, dlv_db = bounded_logvar(float(params["p.logvar_b"]), float(st["logvar_bound"]))
    x0 = np.repeat(X0, int(st["batch_repeat"]), axis=0)        # VCGLoop.py:545
    x, steps_cache, states = x0, [], []
    nll = np.zeros((steps, rows))
    kl = np.zeros((steps, rows))
    for t in range(steps):                                     # VCGLoop.py:176-188
        qc = q_forward(params, x)
        std = np.exp(0.5 * qc["lv"])
        z = qc["mu"] + std * eps[t]                            # InfNet.py:408-409,464-466
        pc = p_forward(params, z)
        target = x if st["chain_type"] == "walkout" else x0    # VCGLoop.py:476-482
        if gaussian:
            nll[t], d_tgt, d_mean, d_lv = gaussian_nll(target, pc["s"], lv_x)
            d_logits = d_mean * pc["s"] * (1.0 - pc["s"])
        else:
            nll[t], d_tgt, d_logits = bernoulli_nll(target, pc["logits"])
            d_lv = 0.0
        kl[t], d_mu_kl, d_lv_kl = gaussian_kl(qc["mu"], qc["lv"])
        steps_cache.append(dict(q=qc, p=pc, std=std, d_tgt=d_tgt, d_logits=d_logits,
                                d_lv=d_lv, d_mu_kl=d_mu_kl, d_lv_kl=d_lv_kl))
        x = pc["s"]                                            # x_{t+1}, fed back
        states.append(x)
    states = np.stack(states) if steps else np.zeros((0, rows, X0.shape[1]))

    # The guide on [X_data; x_1; ...; x_T] (VCGLoop.py:193-194).
    pool, squash = int(st["guide_pool"]), float(st["squash"])
    stacked = np.concatenate([X_data, states.reshape(steps * rows, -1)], axis=0)
    gc = guide_forward(params, stacked, pool, squash)
    nd = X_data.shape[0]
    f = gc["f"]
    f_data, f_gen = f[:nd], f[nd:]

    lf_code, gd_code, gg_code = guide_loss(f_data, f_gen, "code2015")
    lf_paper, gd_paper, gg_paper = guide_loss(f_data, f_gen, "paper")
    lf, g_lf_data, g_lf_gen = ((lf_code, gd_code, gg_code) if st["guide_loss"] == "code2015"
                               else (lf_paper, gd_paper, gg_paper))
    lg, g_lg_gen = generator_loss(f_gen, st["gen_loss"])
    act, g_act_pre, g_act_cls = activation_penalty(gc, pool, st["act_penalty"])
    f_sq = float(np.mean(f * f))                               # NetLayers.py:332, all rows
    w = step_weights(steps, float(st["cost_decay"]))
    chain_nll = float(np.sum(w * nll.mean(axis=1)))            # VCGLoop.py:462-489
    chain_kld = float(np.sum(w * kl.mean(axis=1)))             # VCGLoop.py:491-517
    vae_cost = st["lam_nll"] * chain_nll + st["lam_kld"] * chain_kld
    l2_raw, l2_grads = l2_penalty(params, st)
    guide_cost = st["dw_dn"] * lf + st["lam_l2a"] * act + st["lam_l2d"] * f_sq
    gen_cost = st["dw_gn"] * lg + vae_cost + st["lam_l2w"] * l2_raw
    terms = dict(
        x0=x0, states=states, f=f, f_data=f_data, f_gen=f_gen, nll=nll, kl=kl,
        step_weights=w, chain_nll=chain_nll, chain_kld=chain_kld, vae_cost=float(vae_cost),
        guide_loss=float(lf), guide_loss_code2015=float(lf_code),
        guide_loss_paper=float(lf_paper), gen_loss=float(lg), act_penalty=float(act),
        f_sq_mean=f_sq, l2=float(st["lam_l2w"] * l2_raw), guide_cost=float(guide_cost),
        gen_cost=float(gen_cost))
    cache = dict(steps=steps_cache, guide=gc, nd=nd, rows=rows, n_steps=steps, w=w,
                 g_lf_data=g_lf_data, g_lf_gen=g_lf_gen, g_lg_gen=g_lg_gen,
                 g_act_pre=g_act_pre, g_act_cls=g_act_cls, l2_grads=l2_grads,
                 dlv_db=dlv_db, x_dim=X0.shape[1])
    return terms, cache


def walk_terms(params, X0, X_data, eps, settings=None):
    """The 2015 walk phase's forward pass (guide noise off) and every cost term.

    Parameters
    ----------
    params : dict name -> array (see the module docstring)
    X0 : (n0, x_dim) chain starts, each repeated ``batch_repeat`` times consecutively
    X_data : (N_D, x_dim) the guide's data rows
    eps : (T, n0 * batch_repeat, z_dim) the chain's standard-normal noise (0: noise off)
    settings : dict, keys of :data:`DEFAULTS`

    Returns
    -------
    dict with arrays ``x0`` (R, x_dim), ``states`` (T, R, x_dim) = x_1..x_T, ``f``
    (N_D + T*R,) the stacked guide outputs, ``f_data``, ``f_gen``, ``nll`` and ``kl``
    (T, R), ``step_weights`` (T,); and floats: ``guide_loss`` (the selected form),
    ``guide_loss_code2015``, ``guide_loss_paper``, ``gen_loss`` (unweighted L_g),
    ``chain_nll``, ``chain_kld`` (step-weighted means), ``vae_cost`` (lam_nll * chain_nll +
    lam_kld * chain_kld), ``act_penalty`` (unweighted), ``f_sq_mean`` (mean f^2 over all
    stacked rows), ``l2`` (lam_l2w * the L2 sum), ``guide_cost`` = dw_dn * guide_loss +
    lam_l2a * act_penalty + lam_l2d * f_sq_mean, ``gen_cost`` = dw_gn * gen_loss +
    vae_cost + l2.
    """
    return _forward(params, X0, X_data, eps, full_settings(settings))[0]


# =============================================================================
# The walk phase: backward pass (BPTT)
# =============================================================================
def walk_gradients(params, X0, X_data, eps, settings=None):
    """Hand-written reverse mode through the walk phase: d gen_cost / d every q.* and p.*
    parameter (through the guide's input and the whole unrolled chain) and d guide_cost /
    d every guide.* parameter, weight decay included, before clipping and momentum.

    Same arguments as :func:`walk_terms`. Returns ``{name: array}`` with the shapes of
    ``params`` (``FROZEN_2015`` names included; the 2015 code never applied them).
    """
    st = full_settings(settings)
    eps = _as64(eps, 3, "eps")
    _, c = _forward(params, X0, X_data, eps, st)
    pool, squash = int(st["guide_pool"]), float(st["squash"])
    gc, nd, rows, steps = c["guide"], c["nd"], c["rows"], c["n_steps"]

    # ---- guide side: d guide_cost / d guide params (VCGLoop.py:271-273) ----------
    g_guide = {}
    f = gc["f"]
    g_f = st["lam_l2d"] * 2.0 * f / f.shape[0]
    g_f[:nd] += st["dw_dn"] * c["g_lf_data"]
    g_f[nd:] += st["dw_dn"] * c["g_lf_gen"]
    g_pre = [st["lam_l2a"] * g for g in c["g_act_pre"]]
    g_cls = None if c["g_act_cls"] is None else st["lam_l2a"] * c["g_act_cls"]
    guide_backward(params, gc, g_f, pool, squash, g_pre=g_pre, g_cls=g_cls, grads=g_guide)

    # ---- generator side: d gen_cost / d chain states through the guide -------------
    g_f_gen = np.zeros_like(f)
    g_f_gen[nd:] = st["dw_gn"] * c["g_lg_gen"]
    g_stacked = guide_backward(params, gc, g_f_gen, pool, squash, grads={})
    g_states = g_stacked[nd:].reshape(steps, rows, c["x_dim"])

    # ---- BPTT over the chain (VCGLoop.py:274-281) -------------------------------
    g_gen = {}
    g_b = 0.0
    g_next = np.zeros((rows, c["x_dim"]))      # d gen_cost / d x_{t+1} from later steps
    for t in reversed(range(steps)):
        sc = c["steps"][t]
        s = sc["p"]["s"]
        c_nll = st["lam_nll"] * c["w"][t] / rows       # mean over rows, step weight
        c_kl = st["lam_kld"] * c["w"][t] / rows
        g_s = g_states[t] + g_next
        g_logits = g_s * s * (1.0 - s) + c_nll * sc["d_logits"]
        if st["x_type"] == "gaussian":
            g_b += c_nll * sc["d_lv"] * c["dlv_db"]
        g_z = p_backward(params, sc["p"], g_logits, g_gen)
        g_mu = g_z + c_kl * sc["d_mu_kl"]
        g_lv = g_z * eps[t] * 0.5 * sc["std"] + c_kl * sc["d_lv_kl"]
        g_x = q_backward(params, sc["q"], g_mu, g_lv, g_gen)
        if st["chain_type"] == "walkout":               # nll_t's target is x_t
            g_x = g_x + c_nll * sc["d_tgt"]
        g_next = g_x                                    # x_t = s of step t-1; x_0 is data
    if st["x_type"] == "gaussian":
        _add(g_gen, "p.logvar_b", np.asarray(g_b))

    # ---- weight decay (VCGLoop.py:519-527), added before any clipping -------------
    for name in params:
        if name.startswith(("q.", "p.")) and name not in g_gen:
            g_gen[name] = np.zeros_like(np.asarray(params[name], dtype=np.float64))
    for name, g in c["l2_grads"].items():
        g_gen[name] = g_gen[name] + st["lam_l2w"] * g

    out = {}
    for name, p in params.items():
        g = g_gen.get(name, g_guide.get(name))
        if g is None:
            g = np.zeros(np.shape(p))
        out[name] = np.asarray(g, dtype=np.float64).reshape(np.shape(p))
    return out


# =============================================================================
# Convenience: random parameters of the layout above (tests, comparisons)
# =============================================================================
def random_params(rng, x_dim, z_dim, q_hidden=(7, 7), p_hidden=(7, 7), guide_units=5,
                  guide_pool=4, guide_layers=2, n_classes=10, x_type="bernoulli",
                  out_scale=2.0):
    """A random float64 parameter dict of the layout above (not the 2015 init: scaled so
    every unit is used and the guide's f spreads over both signs).

    rng : numpy.random.Generator."""
    P = {}

    def dense(name, n_in, n_out, gain=1.4, bias=0.1):
        P[f"{name}.W"] = rng.standard_normal((n_in, n_out)) * gain / np.sqrt(n_in)
        P[f"{name}.b"] = bias + 0.1 * rng.standard_normal(n_out)

    for prefix, n_in, hidden, n_out in (("q", x_dim, q_hidden, z_dim), ("p", z_dim, p_hidden, x_dim)):
        sizes = [n_in] + list(hidden)
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            dense(f"{prefix}.h{i}", a, b)
        dense(f"{prefix}.mean", sizes[-1], n_out, gain=1.0, bias=0.0)
        if prefix == "q":
            dense("q.logvar", sizes[-1], n_out, gain=0.5, bias=-0.3)
    if x_type == "gaussian":
        P["p.logvar_b"] = np.asarray(-1.5 + 0.5 * rng.standard_normal())
    n_in = x_dim
    for l in range(guide_layers):
        dense(f"guide.h{l}", n_in, guide_units * guide_pool, gain=1.5, bias=0.0)
        n_in = guide_units
    P["guide.out.W"] = rng.standard_normal((guide_units, 1)) * out_scale
    P["guide.out.b"] = np.zeros(1)
    if n_classes:
        dense("guide.cls", guide_units, n_classes, gain=1.0, bias=0.0)
    return P
