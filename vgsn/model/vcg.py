"""``VCGLoop``: the VAE looped into a guided T-step chain (Sec. 5-6, Fig. 2).

The loop owns the guide f and a NumPy random generator that draws every noise its
train step consumes; it trains the q and p of the ``OneStageModel`` it wraps by the
generator cost (Eq. 7 through the unrolled chain, BPTT) and the guide by a logistic
loss (the 2015 code's form by default, Eq. 6 with ``guide_loss='paper'``).
"""
import numpy as np

from vgsn.backend import T, floatX, function, grad
from vgsn.model import objectives as obj
from vgsn.model.bptt import chain_gradients
from vgsn.model.chain import chain_forward, step_weights
from vgsn.model.compiled import Compiled, as_rows
from vgsn.model.noise import DrawsAhead
from vgsn.model.options import BPTT_MODES, GENERATOR_LOSSES, GUIDE_LOSSES, UNROLLS, check
from vgsn.model.updates import HyperParams, check_momentum, sgd

__all__ = ["VCGLoop"]


class VCGLoop(Compiled, DrawsAhead):
    """The VAE looped into a T-step chain, shaped by a MaxOut guide (Sec. 5-6, Fig. 2).

    Starts from a (pre-trained) ``OneStageModel`` and trains ITS q and p parameters:
    the paper's fork is ``VCGLoop(model.fork())`` (or keep ``model`` here and fork
    the 1-step branch off it) - the same q/p go on either as a guided chain or as a
    1-step VAE.

    One update (``train_step``), all in one compiled function:

    - the chain x0 -> z0 -> x1 -> ... -> x_T runs from each of the 100 rows of X0
      repeated ``batch_repeat`` (5) times (500 chains), as one scan (``vgsn.model.chain``);
    - the guide f sees the stacked input [X_data (200 rows); x_1 .. x_T (T x 500)]
      with its training noise and is trained on
      ``guide_weight * L_f`` (``guide_loss``: the 2015 code's form or Eq. 6)
      ``+ lam_l2d * mean(f^2) + lam_l2a * sum_l mean(a_l^2)``
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
    guide_loss : {'code2015', 'paper'}
        L_f: the 2015 code's ``0.5 softplus(-2 f_data) + 0.5 softplus(2 f_gen)`` (means
        over each side's rows; optimum f = log(D/G)/2), or Eq. 6's ``softplus(-f_data)
        + softplus(f_gen)`` (optimum log(D/G)); ``vgsn.model.objectives.guide_loss``.
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
        'stored' (default): BPTT from stored activations (``vgsn.model.bptt.chain_gradients``,
        no forward recomputation); 'autodiff': ``grad`` through the scan.
    unroll : {'scan', 'python'}
        'python' builds the T steps in a Python loop (a reference; slower to compile).
    seed : int
        Seeds ``self.rng`` (``default_rng([seed, 3])``), which draws every noise.
    """

    FUNCTIONS = ("train_step", "guide_output")
    STATIC_ROWS = ("train_step", "update_terms")
    _OWNER = "loop"

    def __init__(self, model, guide, steps=6, walkback=False, step_decay=0.1, gen_loss="elastic",
                 guide_loss="code2015", chain_gamma=True, moment_weight=0.0, data_rows=200,
                 lr_gen=4e-4, lr_guide=4e-4, lam_l2d=0.05, lam_l2a=0.01, gen_weight=25.0,
                 guide_weight=25.0, momentum=0.0, max_norm=10.0, bptt="stored", unroll="scan",
                 seed=0):
        check("gen_loss", gen_loss, GENERATOR_LOSSES)
        check("guide_loss", guide_loss, GUIDE_LOSSES)
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
        self.guide_loss = guide_loss
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
        if name == "update_terms":
            return self._build_update_terms(rows)
        x = T.matrix("x", dtype=floatX)
        mode = self.compile_mode()
        if name == "guide_output":
            return function([x], self.guide.apply(x)[0], name="guide_output", mode=mode)
        if name == "guide_hidden":
            return function([x], self.guide.hidden_outputs(x), name="guide_hidden", mode=mode)
        raise KeyError(f"no compiled function named {name!r}")

    def _update_graph(self, rows=None, noisy=True):
        """The graph of one guided update, shared by ``train_step`` and ``update_terms``.

        ``rows``: (chain starts, data rows), static in the graph (JAX), or None (any
        rows). ``noisy``: the guide's training noise as inputs; False: no guide noise
        (no dropout, no bias or input noise). Returns (inputs, terms, g_gen, g_guide):
        ``terms`` a dict of symbolic outputs, ``g_gen`` the q/p gradients after weight
        decay and ``g_guide`` the guide's, both before clipping and momentum.
        """
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
                 for n, w in self._noise_widths().items()} if noisy else None
        x0_rep = T.repeat(x0, model.batch_repeat, axis=0)
        # steps is a Python int: the scans' length is static (what XLA needs).
        fwd = chain_forward(model, x0_rep, eps, walkback=self.walkback,
                            store=self.bptt == "stored", unroll=self.unroll, steps=steps)
        # The guide's stacked input: [data rows; x_1 .. x_T] (SPEC section 5).
        x_gen = fwd.states.reshape((fwd.states.shape[0] * fwd.states.shape[1], model.x_dim))
        f, pre, hidden = guide.apply(T.concatenate([x_data, x_gen], axis=0), noise)
        n_data = x_data.shape[0]
        f_data, f_gen = f[:n_data], f[n_data:]
        # Guide: its logistic loss plus its regularisers.
        guide_loss = obj.guide_loss(f_data, f_gen, self.guide_loss)
        act_pen = guide.activation_penalty(pre, hidden, noise)   # vgsn's or the 2015 form
        f_sq = T.mean(T.square(f))
        guide_cost = hp.guide_weight * guide_loss + hp.lam_l2d * f_sq + hp.lam_l2a * act_pen
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
        zero = np.float32(0.0)
        moment = T.constant(zero)
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
        acc = np.float32(0.5) * (T.mean(T.gt(f_data, zero)) + T.mean(T.lt(f_gen, zero)))
        terms = dict(f=f, nll=fwd.nll, kl=fwd.kl, guide_loss=guide_loss, gen_loss=gen_loss,
                     vae_cost=vae_cost, act_penalty=act_pen, f_sq=f_sq, l2=l2,
                     guide_cost=guide_cost, gen_cost=chain_cost + l2, moment=moment,
                     f_data=T.mean(f_data), f_gen=T.mean(f_gen), guide_acc=acc)
        inputs = [x0, x_data, eps] + ([noise[n] for n in self._noise_names()] if noisy else [])
        return inputs, terms, g_gen, g_guide

    def _build_update_terms(self, rows=None):
        inputs, terms, g_gen, g_guide = self._update_graph(rows, noisy=False)
        outputs = [terms[k] for k in self.TERMS] + list(g_gen) + list(g_guide)
        return function(inputs, outputs, name="update_terms", mode=self.compile_mode())

    #: The scalar and array terms ``update_terms`` returns, in its output order.
    TERMS = ("f", "nll", "kl", "guide_loss", "gen_loss", "vae_cost", "act_penalty", "f_sq",
             "l2", "guide_cost", "gen_cost", "moment")

    def _build_train_step(self, rows=None):
        inputs, t, g_gen, g_guide = self._update_graph(rows, noisy=True)
        hp = self.hyper
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
        outputs = [t["guide_loss"], t["gen_loss"], t["vae_cost"], t["guide_cost"], t["gen_cost"],
                   t["l2"], T.mean(t["nll"], axis=1), T.mean(t["kl"], axis=1), t["f_data"],
                   t["f_gen"], t["guide_acc"], t["moment"]]
        # Aesara's local_dot22_to_dot22scalar folds lr * clip-scale into a NEW product when
        # a gradient is a plain dot (the guide's weights): the GEMM then runs twice, once
        # for the clip norm and once for the update (~10% of an update at the 2015 sizes).
        # Keeping the intermediate buffers between calls saves another ~8% (a few hundred
        # MB held at the paper's sizes).
        mode = self.compile_mode(["local_dot22_to_dot22scalar"], keep_buffers=True)
        return function(inputs, outputs, updates=updates, name="train_step", mode=mode)

    # ---- numpy API ---------------------------------------------------------
    def draw_noise(self, chain_rows, data_rows):
        """Every noise one update consumes, drawn from ``self.rng`` in a fixed order:
        the chain's eps (steps, chain_rows, z_dim), then the guide's noise for
        ``data_rows + steps * chain_rows`` stacked rows (``MaxoutGuide.draw_noise``).
        ``train_step`` takes it through ``vgsn.model.noise.DrawsAhead`` (ahead on a GPU)."""
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
        dict of floats: ``guide_loss`` (L_f), ``gen_loss`` (Eq. 7, unweighted),
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

    def update_terms(self, X0, X_data, noise="off", eps=None):
        """Every term of one guided update, computed by ``train_step``'s own graph but
        changing nothing (no parameter, velocity or noise stream moves).

        Parameters
        ----------
        X0, X_data : ndarray
            As for :meth:`train_step` (chain starts, each repeated ``batch_repeat``
            times consecutively, and the guide's data rows).
        noise : {'off'}
            The guide without its training noise (no dropout, no bias or input noise).
        eps : ndarray (steps, X0 rows * batch_repeat, z_dim), optional
            The chain's standard-normal noise; default zeros (z = the posterior mean).

        Returns
        -------
        dict: ``f`` (data rows + steps * chain rows,) the guide on the stacked input
        [X_data; x_1 .. x_T]; ``nll`` and ``kl`` (steps, chain rows); floats
        ``guide_loss`` (L_f in the ``guide_loss`` form), ``gen_loss`` (L_g, unweighted),
        ``vae_cost`` (step-weighted), ``act_penalty`` (unweighted), ``f_sq`` (mean f^2
        over all stacked rows), ``l2`` (the weight decay's value), ``guide_cost`` and
        ``gen_cost`` (the totals each side minimises), ``moment``; and ``grads``, a dict
        parameter name -> gradient of its side's total (q/p: ``gen_cost``, weight decay
        included; guide: ``guide_cost``) before clipping and momentum.
        """
        check("noise", noise, ("off",))
        X0 = as_rows(X0, self.model.x_dim, "update_terms X0")
        X_data = as_rows(X_data, self.model.x_dim, "update_terms X_data")
        shape = (self.steps, X0.shape[0] * self.model.batch_repeat, self.model.z_dim)
        if eps is None:
            eps = np.zeros(shape, np.float32)
        eps = np.asarray(eps, np.float32)
        if eps.shape != shape:
            raise ValueError(f"update_terms eps must have shape {shape}, got {eps.shape}")
        out = self._fn("update_terms", X0.shape[:1] + X_data.shape[:1])(X0, X_data, eps)
        k = len(self.TERMS)
        terms = {name: np.asarray(v) for name, v in zip(self.TERMS, out[:k])}
        for name in self.TERMS[3:]:
            terms[name] = float(terms[name])
        names = [p.name for p in self.params + self.guide_params]
        terms["grads"] = {n: np.asarray(g) for n, g in zip(names, out[k:])}
        return terms

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
