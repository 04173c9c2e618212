"""``OneStageModel``: the VAE of Eq. 3 / Eq. 5 (q(z|x), p(x|z), SGD), the 1-step model.

A model owns its networks, a ``HyperParams`` collection that schedules change
between steps, and a NumPy random generator that draws every noise its
compiled functions consume (z's epsilons are inputs, never hidden RNG state), so
one integer seed reproduces a run bit for bit on the same machine.

Every compiled function is built in ``_build`` under the name of what it does
(``train_step``, ``encode``, ``decode``, ``free_energy_terms``, ``posterior_kl``,
``log_px_given_z``, ``run_chain``; the loop's ``train_step``, ``guide_output``,
``guide_hidden``); each is compiled on its first use (or all at once with
``compile()``) and cached. Nothing else in vgsn compiles a model's graph.
"""
import numpy as np

from vgsn.backend import T, floatX, function
from vgsn.model import objectives as obj
from vgsn.model.chain import apply_control, chain_forward, control_arrays
from vgsn.model.compiled import Compiled, as_rows
from vgsn.model.layers import output_bias_from_mean
from vgsn.model.nets import InfNet
from vgsn.model.options import L2_TARGETS, X_TYPES, check
from vgsn.model.updates import HyperParams, check_momentum, l2_penalty, sgd

__all__ = ["OneStageModel"]


class OneStageModel(Compiled):
    """VAE with q(z|x) and p(x|z) MLPs, trained by SGD on Eq. 3 (or Eq. 5's KL).

    Parameters
    ----------
    x_dim, z_dim : int
    q_hidden, p_hidden : sequence of int
        ReLU hidden layer sizes (MNIST-1: (1500, 1500); MNIST-2: (1000, 1000)).
    x_type : {'bernoulli', 'gaussian'}
        Output model p(x|z): Bernoulli with mean sigmoid(output), or Gaussian with
        mean sigmoid(output) and ONE shared, tanh-bounded log-variance.
    x_mean : ndarray (x_dim,), optional
        Training-set mean pixel; p's output bias starts at logit(0.9 m + 0.05).
    init_scale : float
        Gain of the orthogonal init (1.4 in the 2015 scripts).
    logvar_bound : float
        Bound B of the shared log-variance B tanh(b / B) (6).
    batch_repeat : int
        Each distinct row of a training batch is repeated this many times (5),
        one z sample each.
    momentum, max_norm : float
        SGD momentum beta (0 = plain SGD, the paper; 0.5 = the 2015 scripts) and
        the per-tensor gradient-norm clip (10).
    momentum_scheduled : bool
        Hold beta as the shared ``hyper.momentum`` (``vae.momentum``, from ``momentum``)
        a schedule sets between steps; False (default): a constant of the compiled update.
    lr, lam_kl, gamma_kl, l2 : float
        Initial values of the shared hyperparameters ``self.hyper``: learning
        rate, Eq. 5's lambda and gamma, L2 weight decay on q and p.
    l2_on : {'weights', 'all'}
        What the L2 decay acts on: the weight matrices (default, the usual
        choice) or every q/p parameter, biases and p's shared log-variance
        included (what the 2015 code did; ``presets.code2015`` picks it).
    seed : int
        Seeds both the parameter init and the noise generator ``self.rng``.
    init_weights : bool
        False: q's and p's weight matrices start as zeros, without their orthogonal
        init's SVDs, for a model a checkpoint fills next (``load_models``, resume).
    """

    def __init__(self, x_dim, z_dim, q_hidden=(1500, 1500), p_hidden=(1500, 1500),
                 x_type="bernoulli", x_mean=None, init_scale=1.4, logvar_bound=6.0,
                 batch_repeat=5, momentum=0.0, momentum_scheduled=False, max_norm=10.0, lr=5e-4,
                 lam_kl=1.0, gamma_kl=0.0, l2=1e-5, l2_on="weights", seed=0, init_weights=True):
        check("x_type", x_type, X_TYPES)
        check("l2_on", l2_on, L2_TARGETS)
        if int(batch_repeat) < 1:
            raise ValueError(f"batch_repeat must be >= 1, got {batch_repeat}")
        self.config = dict(
            x_dim=int(x_dim), z_dim=int(z_dim), q_hidden=tuple(int(h) for h in q_hidden),
            p_hidden=tuple(int(h) for h in p_hidden), x_type=x_type, init_scale=float(init_scale),
            logvar_bound=float(logvar_bound), batch_repeat=int(batch_repeat),
            momentum=float(momentum), momentum_scheduled=bool(momentum_scheduled),
            max_norm=None if max_norm is None else float(max_norm), l2_on=l2_on, seed=int(seed))
        self.x_dim, self.z_dim, self.x_type = int(x_dim), int(z_dim), x_type
        self.batch_repeat = int(batch_repeat)
        init_rng = np.random.default_rng([int(seed), 0])
        self.rng = np.random.default_rng([int(seed), 1])
        self.q = InfNet(self.x_dim, q_hidden, self.z_dim, "q", init_rng, init_scale, logvar="head",
                        init_weights=init_weights)
        self.p = InfNet(self.z_dim, p_hidden, self.x_dim, "p", init_rng, init_scale,
                        logvar="shared" if x_type == "gaussian" else "none",
                        logvar_bound=logvar_bound, init_weights=init_weights)
        if x_mean is not None:
            x_mean = np.asarray(x_mean)
            if x_mean.shape != (self.x_dim,):
                raise ValueError(f"x_mean must have shape ({self.x_dim},), got {x_mean.shape}")
            self.p.mean_head.b.set_value(output_bias_from_mean(x_mean))
        # A scheduled beta is a shared scalar; a constant one keeps its graph (and names).
        sched = {"momentum": check_momentum(momentum)} if momentum_scheduled else {}
        self.hyper = HyperParams(prefix="vae", lr=lr, lam_kl=lam_kl, gamma_kl=gamma_kl, l2=l2,
                                 **sched)
        self.params = self.q.params + self.p.params
        self.velocities = []
        self._fns = {}

    # ---- symbolic pieces (reused by the chain) ------------------------------
    def q_sample(self, x, eps):
        """z = mean + exp(logvar / 2) * eps for q(z|x); returns (z, mean, logvar)."""
        mu, lv = self.q.apply(x)
        return obj.reparameterise(mu, lv, eps), mu, lv

    def log_px_of_logits(self, x, logits):
        """Per-row log p(x|z) (rows,) from p's output ``logits`` at z: Bernoulli, or
        Gaussian with mean sigmoid(logits) and p's one shared log-variance."""
        if self.x_type == "bernoulli":
            return obj.bernoulli_log_prob(x, logits)
        return obj.gaussian_log_prob(x, T.sigmoid(logits), self.p.shared_logvar())

    def log_px(self, x, z):
        """Per-row log p(x|z) (rows,) and E[x|z] (rows, x_dim)."""
        logits, _ = self.p.apply(z)
        return self.log_px_of_logits(x, logits), T.sigmoid(logits)

    def x_mean_of(self, z):
        """E[p(x|z)] = sigmoid(p's output), (rows, x_dim)."""
        logits, _ = self.p.apply(z)
        return T.sigmoid(logits)

    def vae_terms(self, x, eps, x_target=None):
        """Per-row -log p(x_target|z) and KL(q(z|x)||N(0,I)) for z = q sample at ``x``.

        ``x_target`` defaults to ``x`` (reconstruct the step's own input, "walkout");
        walkback passes the chain's start x0. Returns (nll, kl, z, x_hat).
        """
        z, mu, lv = self.q_sample(x, eps)
        logp, x_hat = self.log_px(x if x_target is None else x_target, z)
        kl = T.sum(obj.gaussian_kl(mu, lv), axis=1)
        return -logp, kl, z, x_hat

    def vae_cost(self, nll, kl):
        """Mean over rows of nll + Eq. 5 KL, with the model's lambda and gamma."""
        kl_reg = obj.over_regularised_kl(kl, self.hyper.lam_kl, self.hyper.gamma_kl)
        return T.mean(nll + kl_reg)

    def weight_penalty(self):
        """L2 weight decay (scaled by hyper.l2) on q's and p's weight matrices, or on
        every q/p parameter with ``l2_on='all'``: ``(value, {param: gradient})``, see
        ``vgsn.model.updates.l2_penalty``."""
        targets = self.params if self.config["l2_on"] == "all" else self.q.weights + self.p.weights
        return l2_penalty(targets, self.hyper.l2)

    def add_weight_decay(self, grads):
        """``grads`` (list, one per ``self.params``) plus the L2 decay gradients;
        returns (new list, penalty value)."""
        l2, l2_grads = self.weight_penalty()
        return [g + l2_grads[p] if p in l2_grads else g
                for p, g in zip(self.params, grads)], l2

    # ---- compiled functions ---------------------------------------------------
    FUNCTIONS = ("train_step", "encode", "decode", "free_energy_terms", "posterior_kl",
                 "log_px_given_z")

    def _build(self, name, rows=None):
        """Compile the function ``name`` for ``self.mode``; the one place the model's
        functions are built."""
        mode = self.compile_mode()
        x = T.matrix("x", dtype=floatX)
        z = T.matrix("z", dtype=floatX)
        eps = T.matrix("eps", dtype=floatX)
        if name == "train_step":
            x_rep = T.repeat(x, self.batch_repeat, axis=0)
            nll, kl, _, _ = self.vae_terms(x_rep, eps)
            vae = self.vae_cost(nll, kl)
            grads, l2 = self.add_weight_decay(T.grad(vae, self.params))
            cost = vae + l2
            updates, self.velocities = sgd(
                grads, self.params, self.hyper.lr, self.sgd_momentum(self.config["momentum"]),
                max_norm=self.config["max_norm"], velocities=self.velocities or None)
            self._velocities_made()
            # Keep intermediate buffers between calls (no fresh allocation and page
            # faults for every 500 x 1500 activation each update).
            return function([x, eps], [cost, T.mean(nll), T.mean(kl), l2],
                                       updates=updates, name="train_step",
                                       mode=self.compile_mode(keep_buffers=True))
        if name == "encode":
            return function([x], list(self.q.apply(x)), name="encode", mode=mode)
        if name == "decode":
            return function([z], self.x_mean_of(z), name="decode", mode=mode)
        if name == "free_energy_terms":
            nll, kl, _, _ = self.vae_terms(x, eps)
            return function([x, eps], [nll, kl], name="free_energy_terms", mode=mode)
        if name == "posterior_kl":
            mu, lv = self.q.apply(x)
            return function([x], obj.gaussian_kl(mu, lv), name="posterior_kl", mode=mode)
        if name == "log_px_given_z":
            return function([x, z], self.log_px(x, z)[0], name="log_px_given_z", mode=mode)
        if name == "run_chain":
            # states[0] is the controlled start, states[t] the state step t sees (control
            # applied), so clamped pixels equal the control in every state. T is eps's
            # length: one compiled sampler serves every chain length (a compile per
            # length would cost seconds each).
            x0, eps3 = T.matrix("x0", dtype=floatX), T.tensor3("eps", dtype=floatX)
            mask, control = T.matrix("mask", dtype=floatX), T.matrix("control", dtype=floatX)
            fwd = chain_forward(self, x0, eps3, mask=mask, control=control)
            states = T.concatenate([fwd.info["x0_in"].dimshuffle("x", 0, 1),
                                    apply_control(fwd.states, mask, control)], axis=0)
            return function([x0, eps3, mask, control], states, name="run_chain",
                                       mode=mode)
        raise KeyError(f"no compiled function named {name!r}")

    # ---- numpy API ---------------------------------------------------------
    def draw_eps(self, rows, rng=None):
        """Standard normal z noise (rows, z_dim), float32, from ``rng`` or ``self.rng``."""
        return (rng or self.rng).standard_normal((rows, self.z_dim), dtype=np.float32)

    def train_step(self, X):
        """One SGD update on a batch of distinct rows ``X`` (rows, x_dim).

        Each row is repeated ``batch_repeat`` times with its own z sample (the paper:
        100 rows x 5 = 500). Returns a dict of the step's cost terms (floats): the
        total ``cost``, its mean ``nll`` and plain ``kl`` per row and the ``l2`` term.
        """
        X = as_rows(X, self.x_dim, "train_step batch")
        eps = self.draw_eps(X.shape[0] * self.batch_repeat)
        cost, nll, kl, l2 = self._fn("train_step")(X, eps)
        return {"cost": float(cost), "nll": float(nll), "kl": float(kl), "l2": float(l2)}

    def encode(self, X):
        """q(z|x): (mean, logvar), each (rows, z_dim)."""
        mu, lv = self._fn("encode")(as_rows(X, self.x_dim, "encode input"))
        return mu, lv

    def decode(self, Z):
        """E[p(x|z)] = sigmoid(p's output), (rows, x_dim)."""
        return self._fn("decode")(as_rows(Z, self.z_dim, "decode input"))

    def free_energy_terms(self, X, n_samples=1, use_mean=False, batch_rows=2000, rng=None):
        """Per-row (nll, kl): -log p(x|z) averaged over ``n_samples`` z ~ q(z|x)
        (or at z = the posterior mean with ``use_mean=True``) and KL(q(z|x) || N(0, I)).

        nll + kl is the free energy F(x) of Eq. 2, an upper bound on -log p(x).
        """
        X = as_rows(X, self.x_dim, "free_energy_terms input")
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        fn = self._fn("free_energy_terms")
        nll = np.zeros(X.shape[0], np.float64)
        kl = np.zeros(X.shape[0], np.float64)
        draws = 1 if use_mean else int(n_samples)
        for start in range(0, X.shape[0], batch_rows):
            xb = X[start:start + batch_rows]
            for _ in range(draws):
                eps = (np.zeros((xb.shape[0], self.z_dim), floatX) if use_mean
                       else self.draw_eps(xb.shape[0], rng))
                n, k = fn(xb, eps)
                nll[start:start + xb.shape[0]] += n
                kl[start:start + xb.shape[0]] = k
        return nll / draws, kl

    def posterior_kl(self, X):
        """Per-dimension KL(q(z_j|x) || N(0, 1)), (rows, z_dim)."""
        return self._fn("posterior_kl")(as_rows(X, self.x_dim, "posterior_kl input"))

    def log_px_given_z(self, X, Z):
        """Per-row log p(x|z) (rows,) for paired rows of X and Z."""
        X = as_rows(X, self.x_dim, "log_px_given_z X")
        Z = as_rows(Z, self.z_dim, "log_px_given_z Z")
        if X.shape[0] != Z.shape[0]:
            raise ValueError(f"X and Z need the same rows, got {X.shape[0]} and {Z.shape[0]}")
        return self._fn("log_px_given_z")(X, Z)

    def sample_prior(self, n, rng=None):
        """x = E[p(x|z)] for n draws z ~ N(0, I): (n, x_dim)."""
        return self.decode(self.draw_eps(int(n), rng))

    def run_chain(self, X0, steps, mask=None, control=None, sigma_scale=1.0, rng=None):
        """Run the chain (``vgsn.model.chain``) ``steps`` steps from ``X0``; every state.

        Parameters
        ----------
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
        X0 = as_rows(X0, self.x_dim, "X0")
        steps = int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        M, C = control_arrays(X0, mask, control)
        if steps == 0:
            return ((1 - M) * X0 + M * C)[None]
        rng = self.rng if rng is None else rng
        eps = rng.standard_normal((steps, X0.shape[0], self.z_dim), dtype=np.float32)
        if sigma_scale != 1.0:
            eps *= np.float32(sigma_scale)          # z = mu + sigma_scale * std * eps
        return self._fn("run_chain")(X0, eps, M, C)

    # ---- parameters and state -------------------------------------------------
    def shared_logvar(self):
        """The Gaussian output's bounded shared log-variance (a float)."""
        b = float(self.p.logvar_param.get_value())
        bound = self.p.logvar_bound
        return bound * np.tanh(b / bound)

    def _trained(self):
        return list(self.params)

    def fork(self, seed=None, momentum_scheduled=None):
        """A new model with the same config and a copy of the parameters and
        hyperparameters (the paper's fork after pre-training); its noise comes from
        ``seed`` (default: this model's seed + 1), ``momentum_scheduled`` None: as here."""
        config, hyper = dict(self.config), self.hyper.values()
        config["seed"] = config["seed"] + 1 if seed is None else int(seed)
        if momentum_scheduled is not None:
            config["momentum_scheduled"] = bool(momentum_scheduled)
        config["momentum"] = hyper.pop("momentum", config["momentum"])   # beta as it is now
        other = OneStageModel(**config, **hyper, init_weights=False)   # filled next
        other.set_state({p.name: p.get_value() for p in self.params})
        return other
