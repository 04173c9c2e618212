"""The paper's objectives as symbolic expressions (SPEC.md sections 1-3).

Every function takes and returns symbolic tensors; nothing here knows about
networks, updates or training. Per-row quantities are (rows,) vectors; the
caller takes means.

Where the chain's stored-activation BPTT (``vgsn.model.bptt``) needs a derivative written
out, it sits right below the formula it differentiates (``*_grad``), so a change to
one shows next to the other; ``tests/test_core.py`` checks each against ``grad``.
"""
import numpy as np

from vgsn.backend import T, disconnected_grad
from vgsn.model.options import GENERATOR_LOSSES, GUIDE_LOSSES, check

LOG_2PI = float(np.log(2.0 * np.pi))


def softplus(u):
    """log(1 + exp(u)): the library's stable op (finite value for any u, gradient
    sigmoid(u) exactly, also at u = 0)."""
    return T.softplus(u)


def bernoulli_log_prob(x, logits):
    """log p(x | logits) summed over dims, per row (rows,).

    ``x`` may hold grey levels in [0, 1] (the "Rao-Blackwellised" binarisation):
    sum x log s(l) + (1 - x) log(1 - s(l)) = sum x l - softplus(l).
    """
    return T.sum(x * logits - softplus(logits), axis=1)


def bernoulli_log_prob_grad(x, logits):
    """Elementwise derivatives of ``bernoulli_log_prob(x, logits)`` (rows, dims):
    ``(d/dx, d/dlogits) = (logits, x - sigmoid(logits))``."""
    return logits, x - T.sigmoid(logits)


def gaussian_log_prob(x, mean, logvar):
    """log N(x; mean, diag(exp(logvar))) summed over dims, per row (rows,).

    ``logvar`` may be a scalar (the shared log-variance of p) or (rows, dims).
    """
    per_dim = -0.5 * (LOG_2PI + logvar + T.square(x - mean) * T.exp(-logvar))
    return T.sum(per_dim, axis=1)


def gaussian_log_prob_grad(x, mean, logvar):
    """Elementwise derivatives of ``gaussian_log_prob(x, mean, logvar)`` (rows, dims):
    ``d/dx = -(x - mean) exp(-logvar)``, ``d/dmean = (x - mean) exp(-logvar)`` and
    ``d/dlogvar = 0.5 ((x - mean)^2 exp(-logvar) - 1)`` per element (for a scalar
    ``logvar`` its derivative is the sum of the last over every element).

    Returns (d_x, d_mean, d_logvar).
    """
    resid_prec = (x - mean) * T.exp(-logvar)
    d_logvar = 0.5 * ((x - mean) * resid_prec - 1.0)
    return -resid_prec, resid_prec, d_logvar


def gaussian_kl(mu_q, lv_q, mu_p=0.0, lv_p=0.0):
    """KL(N(mu_q, exp(lv_q)) || N(mu_p, exp(lv_p))) per dimension (rows, dims).

    0.5 * (lv_p - lv_q + exp(lv_q - lv_p) + (mu_q - mu_p)^2 / exp(lv_p) - 1).
    """
    return 0.5 * (lv_p - lv_q + T.exp(lv_q - lv_p) + T.square(mu_q - mu_p) * T.exp(-lv_p) - 1.0)


def gaussian_kl_grad(mu_q, lv_q):
    """Derivatives of ``gaussian_kl(mu_q, lv_q)`` (against the prior N(0, I), what the
    chain uses) per dimension: ``(d/dmu_q, d/dlv_q) = (mu_q, 0.5 (exp(lv_q) - 1))``."""
    return mu_q, 0.5 * (T.exp(lv_q) - 1.0)


def reparameterise(mu, lv, eps):
    """z = mu + exp(lv / 2) * eps: a draw from N(mu, exp(lv)) as a function of the
    standard normal noise ``eps`` (Sec. 2), differentiable in mu and lv."""
    return mu + T.exp(0.5 * lv) * eps


def reparameterise_grad(g_z, lv, eps):
    """From ``g_z`` = d cost / d z of ``z = reparameterise(mu, lv, eps)``:
    ``(d cost/d mu, d cost/d lv) = (g_z, g_z * eps * 0.5 exp(lv / 2))``."""
    return g_z, g_z * eps * 0.5 * T.exp(0.5 * lv)


def over_regularised_kl(kl, lam, gamma, axis=None):
    """Eq. 5: lam * KL + gamma * ([KL - Kbar]_+)^2, per row.

    ``kl`` is the per-row KL (rows,). Kbar is the minibatch mean of ``kl`` held
    constant (no gradient through Kbar, nor through the mask [.]_+ > 0, as the 2015
    code did): a row whose KL is below Kbar gets exactly ``lam`` times the plain KL
    gradient. lam = 1, gamma = 0 is the plain KL of Eq. 3.

    ``axis`` (e.g. 1 for a (steps, rows) array of per-step KLs) takes Kbar over that
    axis only: one minibatch mean per step of an unrolled chain.
    """
    kbar = disconnected_grad(T.mean(kl, axis=axis, keepdims=axis is not None))
    excess = T.maximum(kl - kbar, 0.0)
    return lam * kl + gamma * T.square(excess)


def free_energy(nll, kl):
    """Eq. 2: F(x) = E_q[-log p(x|z)] + KL(q(z|x) || p*(z)), per row."""
    return nll + kl


def guide_loss(f_data, f_gen, form="code2015"):
    """The guide's logistic loss (a scalar); each expectation is the mean over its own rows.

    form='paper': Eq. 6, E_D[b(f(x))] + E_G[b(-f(x))] with b(u) = log(1 + exp(-u)),
    i.e. mean softplus(-f_data) + mean softplus(f_gen); the optimal guide is
    f = log D(x)/G(x).

    form='code2015': what the 2015 code trained (its ``logreg_loss`` through a softplus
    of scale 2): mean 0.5 softplus(-2 f_data) + mean 0.5 softplus(2 f_gen). The same
    gradient at f = 0, but the optimum is f = log(D/G) / 2, so the generator loss of
    Eq. 7, read off f, pushes about half (linear part) to a quarter (quadratic part) as
    hard as under Eq. 6 for the same D/G.
    """
    check("guide loss form", form, GUIDE_LOSSES)
    if form == "paper":
        return T.mean(softplus(-f_data)) + T.mean(softplus(f_gen))
    return 0.5 * (T.mean(softplus(-2.0 * f_data)) + T.mean(softplus(2.0 * f_gen)))


def generator_loss(f_gen, kind="elastic"):
    """Eq. 7 on the guide's outputs for generated rows (a scalar).

    kind='abs': E_G[|f| I[f < 0]] (the one-sided absolute loss of Eq. 7);
    kind='elastic': E_G[0.5 * ([-f]_+ + [-f]_+^2)], the half-rectified elastic net
    with linear and quadratic parts weighted equally (what Sec. 7 used; default).
    Both are zero where f >= 0, i.e. at G = D where f = log D/G = 0.
    """
    check("generator loss kind", kind, GENERATOR_LOSSES)
    neg = T.maximum(-f_gen, 0.0)
    if kind == "abs":
        return T.mean(neg)
    return T.mean(0.5 * (neg + T.square(neg)))                # elastic


def moment_matching(x_gen, x_data):
    """Squared distance between the means and between the covariances of two sets.

    ||mean_G - mean_D||^2 + ||cov_G - cov_D||_F^2 (both (rows, dims) inputs); zero
    when G = D in its first two moments. An optional extra generator term (Sec. 5).
    """
    mu_g, mu_d = T.mean(x_gen, axis=0), T.mean(x_data, axis=0)
    cg, cd = x_gen - mu_g, x_data - mu_d
    cov_g = T.dot(cg.T, cg) / T.cast(x_gen.shape[0], x_gen.dtype)
    cov_d = T.dot(cd.T, cd) / T.cast(x_data.shape[0], x_data.dtype)
    return T.sum(T.square(mu_g - mu_d)) + T.sum(T.square(cov_g - cov_d))
