"""The models: ``OneStageModel`` (the VAE of Eq. 3 / Eq. 5) and ``VCGLoop`` (Sec. 5-6).

A model owns its networks, a ``HyperParams`` collection that schedules change
between steps, and a NumPy random generator that draws every noise its
compiled functions consume (z's epsilons are inputs, never hidden RNG state), so
one integer seed reproduces a run bit for bit on the same machine.

Every compiled function is built in ``_build`` under the name of what it does
(``train_step``, ``encode``, ``decode``, ``free_energy_terms``, ``posterior_kl``,
``log_px_given_z``, ``run_chain``; the loop's ``train_step``, ``guide_output``,
``guide_hidden``); each is compiled on its first use (or all at once with
``compile()``) and cached. Nothing else in vgsn compiles a model's graph. The two
``train_step`` builds and ``run_chain`` go through ``vgsn.graphcache`` (their
rewriting is most of a warm compile); the rest compile the library's ordinary way.
"""
import numpy as np

from vgsn import graphcache
from vgsn import objectives as obj
from vgsn.backend import T, floatX, function, grad
from vgsn.bptt import chain_gradients
from vgsn.chain import apply_control, chain_forward, control_arrays, step_weights
from vgsn.compiled import Compiled, as_rows
from vgsn.layers import output_bias_from_mean
from vgsn.nets import InfNet
from vgsn.noise import DrawsAhead
from vgsn.options import BPTT_MODES, GENERATOR_LOSSES, L2_TARGETS, UNROLLS, X_TYPES, check
from vgsn.updates import HyperParams, check_momentum, l2_penalty, sgd

__all__ = ["OneStageModel", "VCGLoop", "output_bias_from_mean", "X_TYPES", "L2_TARGETS",
           "BPTT_MODES"]


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
    """

    def __init__(self, x_dim, z_dim, q_hidden=(1500, 1500), p_hidden=(1500, 1500),
                 x_type="bernoulli", x_mean=None, init_scale=1.4, logvar_bound=6.0,
                 batch_repeat=5, momentum=0.0, momentum_scheduled=False, max_norm=10.0, lr=5e-4,
                 lam_kl=1.0, gamma_kl=0.0, l2=1e-5, l2_on="weights", seed=0):
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
        self.q = InfNet(self.x_dim, q_hidden, self.z_dim, "q", init_rng, init_scale, logvar="head")
        self.p = InfNet(self.z_dim, p_hidden, self.x_dim, "p", init_rng, init_scale,
                        logvar="shared" if x_type == "gaussian" else "none",
                        logvar_bound=logvar_bound)
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
        ``vgsn.updates.l2_penalty``."""
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
            return graphcache.function([x, eps], [cost, T.mean(nll), T.mean(kl), l2],
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
            # length would cost seconds each; XLA, which needs it static, is issue 13).
            x0, eps3 = T.matrix("x0", dtype=floatX), T.tensor3("eps", dtype=floatX)
            mask, control = T.matrix("mask", dtype=floatX), T.matrix("control", dtype=floatX)
            fwd = chain_forward(self, x0, eps3, mask=mask, control=control)
            states = T.concatenate([fwd.info["x0_in"].dimshuffle("x", 0, 1),
                                    apply_control(fwd.states, mask, control)], axis=0)
            return graphcache.function([x0, eps3, mask, control], states, name="run_chain",
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
        """Run the chain (``vgsn.chain``) ``steps`` steps from ``X0``; every state.

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
        other = OneStageModel(**config, **hyper)
        other.set_state({p.name: p.get_value() for p in self.params})
        return other


# =============================================================================
# VCGLoop: the guided chain (Sec. 5-6, Fig. 2)
# =============================================================================
class VCGLoop(Compiled, DrawsAhead):
    """The VAE looped into a T-step chain, shaped by a MaxOut guide (Sec. 5-6, Fig. 2).

    Starts from a (pre-trained) ``OneStageModel`` and trains ITS q and p parameters:
    the paper's fork is ``VCGLoop(model.fork())`` (or keep ``model`` here and fork
    the 1-step branch off it) - the same q/p go on either as a guided chain or as a
    1-step VAE.

    One update (``train_step``), all in one compiled function:

    - the chain x0 -> z0 -> x1 -> ... -> x_T runs from each of the 100 rows of X0
      repeated ``batch_repeat`` (5) times (500 chains), as one scan (``vgsn.chain``);
    - the guide f sees the stacked input [X_data (200 rows); x_1 .. x_T (T x 500)]
      with its training noise and is trained on
      ``guide_weight * L_f`` (Eq. 6) ``+ lam_l2d * mean(f^2) + lam_l2a * sum_l mean(a_l^2)``
      (a_l: the maxout layers' pre-activations);
    - q and p are trained on ``gen_weight * L_g(f(x_1..x_T))`` (Eq. 7: 'elastic' =
      the half-rectified elastic net of Sec. 7, or 'abs') ``+ moment_weight * MM``
      ``+ sum_t w_t mean_rows(nll_t + Eq.5(kl_t)) + l2 * sum ||W||^2``, with w_t =
      step_decay^t / sum (SPEC section 4), nll_t reconstructing the step's own input
      (walkout) or x0 (walkback); gradients go back through every step (BPTT).

    Who owns which hyperparameter: ``lam_kl``, ``gamma_kl`` (Eq. 5) and ``l2`` are the
    MODEL's (``model.hyper``, the shared variables ``OneStageModel.train_step`` uses: one
    schedule drives the KL weight either way); the loop's ``self.hyper`` holds ``lr_gen``,
    ``lr_guide``, ``gen_weight``, ``guide_weight``, ``lam_l2d``, ``lam_l2a`` (and
    ``moment_weight``). The loop never writes the model's: set ``model.hyper`` (e.g. the
    chain phase's ``l2=1e-4``) before or between updates.

    Parameters
    ----------
    model : OneStageModel
    guide : MaxoutGuide
        The guide f, ready built (its input size must be the model's x_dim). The
        2015 scripts' MNIST guide is ``MaxoutGuide(model.x_dim, rng)`` with its defaults.
    steps : int
        Unrolled steps T (6).
    walkback : bool
        Reconstruct x0 at every step instead of the step's own input (walkout).
    step_decay : float
        Step t's VAE cost weighs step_decay**t, normalised (2015 code 0.1; its MNIST
        script 0.0 = step 0 only).
    gen_loss : {'elastic', 'abs'}
    chain_gamma : bool
        Keep Eq. 5's squared term (the model's ``gamma_kl``) in the chain's per-step
        VAE costs (default); False gives each step ``lambda * KL`` only, as the 2015
        chain cost had it (``presets.code2015``). The 1-step model keeps gamma either way.
    moment_weight : float
        Weight of the mean/covariance matching term (Sec. 5); 0 leaves it out of the graph.
    data_rows : int
        Rows of X_data the caller shows the guide per update (200); informational.
    lr_gen, lr_guide : float
        Learning rates of q/p and of the guide (4e-4: the 2015 chain phase).
    lam_l2d, lam_l2a : float
        Guide regularisers: output (0.05) and pre-activation (0.01) squares.
    gen_weight, guide_weight : float
        Weights of L_g and L_f (25 each in the 2015 scripts).
    momentum, max_norm : float
        SGD momentum beta and per-tensor gradient clip, for q/p and the guide; the
        velocities (``sgd``'s, named ``vcg.<param>.velocity``) are made with the train step.
    bptt : {'stored', 'autodiff'}
        'stored' (default): BPTT from stored activations (``vgsn.bptt.chain_gradients``,
        no forward recomputation); 'autodiff': ``grad`` through the scan.
    unroll : {'scan', 'python'}
        'python' builds the T steps in a Python loop (a reference; slower to compile).
    seed : int
        Seeds ``self.rng`` (``default_rng([seed, 3])``), which draws every noise.
    """

    FUNCTIONS = ("train_step", "guide_output")
    STATIC_ROWS = ("train_step",)
    _OWNER = "loop"

    def __init__(self, model, guide, steps=6, walkback=False, step_decay=0.1, gen_loss="elastic",
                 chain_gamma=True, moment_weight=0.0, data_rows=200, lr_gen=4e-4, lr_guide=4e-4,
                 lam_l2d=0.05, lam_l2a=0.01, gen_weight=25.0, guide_weight=25.0, momentum=0.0,
                 max_norm=10.0, bptt="stored", unroll="scan", seed=0):
        check("gen_loss", gen_loss, GENERATOR_LOSSES)
        check("bptt", bptt, BPTT_MODES)
        check("unroll", unroll, UNROLLS)
        check_momentum(momentum)
        if int(data_rows) < 1:
            raise ValueError(f"data_rows must be >= 1, got {data_rows}")
        if getattr(guide, "n_in", None) is None:
            raise ValueError(f"VCGLoop needs a guide (a MaxoutGuide), got {guide!r}")
        if guide.n_in != model.x_dim:
            raise ValueError(f"the guide takes {guide.n_in} inputs, the model's x has {model.x_dim}")
        self.model, self.guide = model, guide
        self.steps = int(steps)
        self.step_weights = step_weights(self.steps, step_decay)   # validates steps, decay
        self.walkback, self.step_decay, self.gen_loss = bool(walkback), float(step_decay), gen_loss
        self.chain_gamma = bool(chain_gamma)
        self.data_rows, self.bptt, self.unroll = int(data_rows), bptt, unroll
        self.momentum = float(momentum)
        self.max_norm = None if max_norm is None else float(max_norm)
        self.use_moments = float(moment_weight) != 0.0
        self.seed = int(seed)
        self.rng = np.random.default_rng([self.seed, 3])
        hyper = dict(lr_gen=lr_gen, lr_guide=lr_guide, gen_weight=gen_weight,
                     guide_weight=guide_weight, lam_l2d=lam_l2d, lam_l2a=lam_l2a)
        if self.use_moments:
            hyper["moment_weight"] = moment_weight
        self.hyper = HyperParams(prefix="vcg", **hyper)
        self.params = list(model.params)            # q and p: trained by the generator cost
        self.guide_params = list(guide.params)      # f: trained by the guide cost
        self.velocities = []                        # sgd's, made with the train step
        self._fns = {}

    def _trained(self):
        return self.params + self.guide_params

    # ---- graph -----------------------------------------------------------------
    def _noise_names(self):
        names = self.guide.noise_names()
        return names + (["vis_add"] if self.guide.input_noise > 0 else [])

    def _noise_widths(self):   # name -> columns of each guide noise input
        width = self.guide.noise_widths()
        return {n: width[n] for n in self._noise_names()}

    def _build(self, name, rows=None):
        """Compile the function ``name`` for ``self.mode``; the one place the loop's
        functions are built. ``rows``: (chain starts, data rows) of the train step,
        static in the graph (JAX), or None (any rows)."""
        if name == "train_step":
            return self._build_train_step(rows)
        x = T.matrix("x", dtype=floatX)
        mode = self.compile_mode()
        if name == "guide_output":
            return function([x], self.guide.apply(x)[0], name="guide_output", mode=mode)
        if name == "guide_hidden":
            return function([x], self.guide.hidden_outputs(x), name="guide_hidden", mode=mode)
        raise KeyError(f"no compiled function named {name!r}")

    def _build_train_step(self, rows=None):
        model, guide, hp, steps = self.model, self.guide, self.hyper, self.steps
        # XLA needs every shape static: a scan's output buffer is allocated from the
        # chain's row count. With ``rows`` the inputs carry their shapes (one compile per
        # distinct batch shape; a run has one); without, the graph takes any rows.
        n0, nd = rows if rows is not None else (None, None)
        shape = (lambda *s: s) if rows is not None else (lambda *s: None)
        x0 = self.input("x0", shape(n0, model.x_dim))
        x_data = self.input("x_data", shape(nd, model.x_dim))
        chain_rows = None if n0 is None else n0 * model.batch_repeat
        eps = self.input("eps", shape(steps, chain_rows, model.z_dim), ndim=3)
        stacked = None if n0 is None else nd + steps * chain_rows
        noise = {n: self.input(f"guide.noise.{n}", shape(stacked, w))
                 for n, w in self._noise_widths().items()}
        x0_rep = T.repeat(x0, model.batch_repeat, axis=0)
        # steps is a Python int: the scans' length is static (what XLA needs).
        fwd = chain_forward(model, x0_rep, eps, walkback=self.walkback,
                            store=self.bptt == "stored", unroll=self.unroll, steps=steps)
        # The guide's stacked input: [data rows; x_1 .. x_T] (SPEC section 5).
        x_gen = fwd.states.reshape((fwd.states.shape[0] * fwd.states.shape[1], model.x_dim))
        f, pre, hidden = guide.apply(T.concatenate([x_data, x_gen], axis=0), noise)
        n_data = x_data.shape[0]
        f_data, f_gen = f[:n_data], f[n_data:]
        # Guide: Eq. 6 plus its regularisers.
        guide_loss = obj.guide_loss(f_data, f_gen)
        act_pen = guide.activation_penalty(pre, hidden, noise)   # vgsn's or the 2015 form
        guide_cost = (hp.guide_weight * guide_loss + hp.lam_l2d * T.mean(T.square(f))
                      + hp.lam_l2a * act_pen)
        # Generator (q and p): Eq. 7 on f(chain outputs) + weighted per-step VAE costs
        # (Eq. 2 with Eq. 5's KL, the model's lambda / gamma) + L2 weight decay.
        gen_loss = obj.generator_loss(f_gen, self.gen_loss)
        # Step t's cost is model.vae_cost(nll[t], kl[t]) (Kbar = step t's minibatch mean;
        # without gamma if not chain_gamma), written over the whole (steps, rows) arrays so
        # the graph does not grow with T.
        if self.chain_gamma:
            kl_reg = obj.over_regularised_kl(fwd.kl, model.hyper.lam_kl, model.hyper.gamma_kl,
                                             axis=1)
        else:                                    # the 2015 chain cost: lambda * KL only
            kl_reg = model.hyper.lam_kl * fwd.kl
        step_costs = T.mean(fwd.nll + kl_reg, axis=1)
        vae_cost = T.sum(T.constant(self.step_weights) * step_costs)
        chain_cost = hp.gen_weight * gen_loss + vae_cost
        moment = None
        if self.use_moments:
            moment = obj.moment_matching(x_gen, x_data)
            chain_cost = chain_cost + hp.moment_weight * moment
        # Gradients: the guide by its own cost only, q/p by the generator cost only.
        g_guide = grad(guide_cost, self.guide_params)
        if self.bptt == "stored":
            g_states, g_nll, g_kl = grad(chain_cost, [fwd.states, fwd.nll, fwd.kl],
                                         disconnected_inputs="ignore", return_disconnected="None")
            g_chain = chain_gradients(model, fwd, g_states, g_nll, g_kl)
            g_gen = [g_chain[p] for p in self.params]
        else:
            g_gen = grad(chain_cost, self.params)
        g_gen, l2 = model.add_weight_decay(g_gen)
        n_gen = len(self.params)
        vel = self.velocities or None               # kept across a rebuild
        updates, v_gen = sgd(g_gen, self.params, hp.lr_gen, momentum=self.momentum,
                             max_norm=self.max_norm, velocities=vel and vel[:n_gen],
                             velocity_prefix="vcg.")
        g_updates, v_guide = sgd(g_guide, self.guide_params, hp.lr_guide, momentum=self.momentum,
                                 max_norm=self.max_norm, velocities=vel and vel[n_gen:],
                                 velocity_prefix="vcg.")
        updates.update(g_updates)
        self.velocities = v_gen + v_guide
        self._velocities_made()
        zero = np.float32(0.0)
        acc = np.float32(0.5) * (T.mean(T.gt(f_data, zero)) + T.mean(T.lt(f_gen, zero)))
        outputs = [guide_loss, gen_loss, vae_cost, guide_cost, chain_cost + l2, l2,
                   T.mean(fwd.nll, axis=1), T.mean(fwd.kl, axis=1), T.mean(f_data), T.mean(f_gen),
                   acc, moment if moment is not None else T.constant(zero)]
        inputs = [x0, x_data, eps] + [noise[n] for n in self._noise_names()]
        # Aesara's local_dot22_to_dot22scalar folds lr * clip-scale into a NEW product when
        # a gradient is a plain dot (the guide's weights): the GEMM then runs twice, once
        # for the clip norm and once for the update (~10% of an update at the 2015 sizes).
        # Keeping the intermediate buffers between calls saves another ~8% (a few hundred
        # MB held at the paper's sizes).
        mode = self.compile_mode(["local_dot22_to_dot22scalar"], keep_buffers=True)
        return graphcache.function(inputs, outputs, updates=updates, name="train_step", mode=mode)

    # ---- numpy API ---------------------------------------------------------
    def draw_noise(self, chain_rows, data_rows):
        """Every noise one update consumes, drawn from ``self.rng`` in a fixed order:
        the chain's eps (steps, chain_rows, z_dim), then the guide's noise for
        ``data_rows + steps * chain_rows`` stacked rows (``MaxoutGuide.draw_noise``).
        ``train_step`` takes it through ``vgsn.noise.DrawsAhead`` (ahead on a GPU)."""
        self.rng                                  # noqa: B018 - puts back noise drawn ahead
        return self._draw_noise(chain_rows, data_rows)

    def _draw_noise(self, chain_rows, data_rows):
        eps = self._rng.standard_normal((self.steps, chain_rows, self.model.z_dim), dtype=np.float32)
        noise = self.guide.draw_noise(self._rng, data_rows + self.steps * chain_rows)
        return eps, [noise[n] for n in self._noise_names()]

    def train_step(self, X0, X_data):
        """One update of the guide and of q/p (see the class docstring).

        Parameters
        ----------
        X0 : ndarray (rows, x_dim)
            Distinct chain starts (100); each is repeated ``batch_repeat`` (5) times.
        X_data : ndarray (data_rows, x_dim)
            Training images for the guide's data side (200).

        Returns
        -------
        dict of floats: ``guide_loss`` (Eq. 6), ``gen_loss`` (Eq. 7, unweighted),
        ``vae_cost`` (the step-weighted VAE cost, Eq. 5 KL), ``guide_cost`` and
        ``gen_cost`` (the totals each side minimises, regularisers included), ``l2``,
        ``nll`` and ``kl`` (means over rows and steps), ``nll_first`` / ``kl_first``
        (step 0: the 1-step VAE's terms), ``f_data`` / ``f_gen`` (mean guide output
        on each side), ``guide_acc`` (balanced accuracy of sign(f)), ``moment``
        (0 unless used); plus ``nll_steps`` / ``kl_steps``, (steps,) arrays.
        """
        X0 = as_rows(X0, self.model.x_dim, "train_step X0")
        X_data = as_rows(X_data, self.model.x_dim, "train_step X_data")
        eps, noise = self.take_noise(X0.shape[0] * self.model.batch_repeat, X_data.shape[0])
        (guide_loss, gen_loss, vae_cost, guide_cost, gen_cost, l2, nll_t, kl_t, f_data, f_gen,
         acc, moment) = self._fn("train_step", X0.shape[:1] + X_data.shape[:1])(X0, X_data, eps,
                                                                                 *noise)
        nll_t, kl_t = np.asarray(nll_t, np.float64), np.asarray(kl_t, np.float64)
        out = dict(guide_loss=guide_loss, gen_loss=gen_loss, vae_cost=vae_cost,
                   guide_cost=guide_cost, gen_cost=gen_cost, l2=l2, nll=nll_t.mean(),
                   kl=kl_t.mean(), nll_first=nll_t[0], kl_first=kl_t[0], f_data=f_data,
                   f_gen=f_gen, guide_acc=acc, moment=moment)
        out = {k: float(v) for k, v in out.items()}
        out.update(nll_steps=nll_t, kl_steps=kl_t)
        return out

    def guide_output(self, X):
        """The noise-free guide f(x), (rows,): an estimate of log D(x)/G(x)."""
        return self._fn("guide_output")(as_rows(X, self.model.x_dim, "guide_output input"))

    def guide_hidden(self, X):
        """The noise-free guide's maxout layer outputs for rows ``X``: a list of
        (rows, units) arrays, one per layer (``MaxoutGuide.hidden_outputs``)."""
        X = as_rows(X, self.model.x_dim, "guide_hidden input")
        return [np.asarray(h) for h in self._fn("guide_hidden")(X)]

    def run_chain(self, X0, steps, mask=None, control=None, sigma_scale=1.0, rng=None):
        """``model.run_chain`` with the noise from ``rng`` (default: the loop's own
        ``self.rng``). Returns (steps + 1, rows, x_dim)."""
        return self.model.run_chain(X0, steps, mask=mask, control=control,
                                    sigma_scale=sigma_scale, rng=self.rng if rng is None else rng)
