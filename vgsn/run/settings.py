"""Every setting of a run: the ``Preset`` dataclass (the paper's values as defaults) and
its validation (one check of each allowed value and type, before anything is written).

Text into settings (command-line values, config files) is :mod:`vgsn.run.config`; the
named experiments and the mapping from a preset to the model and loop constructors are
:mod:`vgsn.run.presets`.
"""
import math
import numbers
from dataclasses import dataclass, fields

from vgsn.model.options import (BPTT_MODES, GENERATOR_LOSSES, GUIDE_LOSSES, L2_TARGETS, SIGMA_GRIDS, UNROLLS,
                          X_TYPES, check)

__all__ = ["Preset", "RENAMED", "RETIRED", "MAX_UPDATES", "GPDE_HEADLINES", "PAPER_GRIDS",
           "GUIDE_PENALTIES", "TFD_FOLD_NAMES", "FIELD_TYPES", "DEFAULTS", "KIND_WORDS",
           "check_type"]

#: Fields renamed to their constructor's argument: old name -> new name(s). Configs
#: saved before (a run folder's ``config.json``, a checkpoint) still load.
RENAMED = {"hidden": ("q_hidden", "p_hidden"), "chain_steps": ("steps",),
           "chain_lr": ("lr_gen",), "guide_lr": ("lr_guide",), "guide_l2": ("lam_l2d",),
           "guide_data_rows": ("data_rows",)}
#: Fields added later, with the value a config saved before them was run with.
ADDED = {"guide_loss": "paper"}
#: Fields that are gone (their only value was this); dropped when a config loads.
RETIRED = {"fault_at": None}

#: ``gpde_protocol``: which GPDE protocol ``report.md`` headlines (both are computed).
GPDE_HEADLINES = ("both", "vgsn", "paper")
#: ``paper_sigmas``: the paper-era script's grids (``vgsn.eval.bound.PAPER_SIGMAS``).
PAPER_GRIDS = ("mnist", "mnist-var", "tfd")
#: ``guide_act_penalty``: vgsn's form of the guide's activation penalty, or the 2015 code's.
GUIDE_PENALTIES = ("vgsn", "code2015")
#: ``tfd_fold``: the 2015 code's 'all', or one held-out fold (``datasets.TFD_FOLDS``).
TFD_FOLD_NAMES = ("all", "0", "1", "2", "3", "4")

@dataclass
class Preset:
    """One experiment: every setting, the paper's values as defaults.

    Model (SPEC.md sections 1, 5)
    -----------------------------
    dataset : str
        ``load_dataset`` name ('mnist', 'tfd', 'olivetti', 'frey', 'digits').
    fallback_dataset : str or None
        Used (and said so) when ``dataset`` is not on disk; only the demos set it.
    x_type : {'bernoulli', 'gaussian'}
    q_hidden, p_hidden : tuple of int
        ReLU hidden layers of q and of p.
    z_dim : int
    init_scale, logvar_bound : float
        Orthogonal-init gain (1.4) and the shared log-variance bound B (6).

    SGD (section 6)
    ---------------
    batch_size, batch_repeat : int
        Rows per update and z samples per row (100 x 5). Rows are drawn with
        replacement as the 2015 code did (``npr.randint``): about 9% of 100-row
        MNIST batches hold a repeated row (1 - prod_{i<100}(1 - i/50000) = 0.094).
    distinct_rows : bool
        Draw each minibatch (and the guide's data rows) without repeats instead
        (``rng.choice(n, rows, replace=False)``); changes the data stream only when on.
    momentum : float
        beta of m <- beta m + (1 - beta) g: 0 is the paper's plain SGD, 0.5 the code's.
    max_norm : float
        Per-tensor gradient-norm clip (10).

    Pre-training: the 1-step VAE (Eq. 3 / Eq. 5)
    --------------------------------------------
    pretrain_updates : int
    pretrain_lr, pretrain_warmup, pretrain_lr_decay, pretrain_lr_decay_every
        lr(u) = lr * min(1, (u + 1) / warmup) * decay ** (u // decay_every).
    pretrain_l2 : float
        L2 weight decay on q and p (1e-5).
    lam_kl, gamma_kl : float
        Eq. 5's lambda and gamma (1, 0 = the plain free energy, "VAR").
    kl_warmup : int
        The KL weight rises linearly from ``kl_warmup_from`` to lam_kl over this
        many updates.
    kl_warmup_from : float
        Where the KL weight starts (1: the MNIST scripts' ``1 + scale * (lam - 1)``;
        0: the TFD script's ``scale * lam``, ``code2015``).
    pretrain_x_type, pretrain_batch_repeat, pretrain_momentum : optional
        Pre-training's own pixel model, z samples per row and momentum (None: the
        same as ``x_type``, ``batch_repeat``, ``momentum``). At the fork the model is
        rebuilt with the chain's values and the pre-trained weights (a Gaussian
        chain's shared log-variance starts at 0 there, as in the TFD script).
    pretrain_momentum_late, pretrain_momentum_switch : float or None, int
        The 1-step VAE's momentum from update ``pretrain_momentum_switch`` on (counted
        over the run, so the ``vae`` branch continues it); before, ``pretrain_momentum``
        (or ``momentum``). None and 0 (default): no switch; set both or neither.
    pretrain_momentum_warmup : int
        The 1-step VAE's momentum is multiplied by min(1, u / warmup) (0 = off).
        ``code2015`` for TFD: 0.5, 0.9 from update 50,000, warm-up 5,000 (the script's
        ``mom_1=scale*momentum``). With a switch or a warm-up (``momentum_scheduled``)
        the model holds its momentum as the shared hyperparameter ``vae.momentum``
        (``schedules.momentum_at`` sets it before every update); otherwise it is a
        constant of the compiled update, as before.

    The fork and the guided chain (Sec. 5-6)
    ----------------------------------------
    chain_updates : int
        Updates after the fork (each branch).
    vae_branch : bool
        Also continue a copy as a 1-step VAE for ``chain_updates`` (Fig. 3b).
    steps : int
        Unrolled chain steps T (6).
    walkback : bool
        Reconstruct x0 at every step instead of the step's input.
    step_decay : float
        Step t's VAE cost weighs step_decay ** t (normalised; 0.1, see above).
    gen_loss : {'elastic', 'abs'}
        The generator's loss, Eq. 7 (Sec. 7: the half-rectified elastic net).
    chain_gamma : bool
        Eq. 5's squared term (``gamma_kl``) in the chain's per-step VAE costs too
        (True); False: ``lambda * KL`` only, the 2015 chain cost (``code2015``).
    lr_gen, chain_warmup, chain_lr_decay, chain_lr_decay_every
        q/p's learning rate in the chain phase and its schedule (counted from the
        fork).
    lr_guide : float or None
        The guide's learning rate; None: ``lr_gen`` (the same schedule scales both).
    chain_l2 : float
        L2 weight decay on q and p in the chain phase (1e-4).
    l2_on : {'weights', 'all'}
        What the L2 decay (both phases) acts on: q's and p's weight matrices, or
        every q/p parameter as the 2015 code did (``code2015``).
    chain_momentum : float or None
        Momentum of the guided chain's q/p and guide updates (None: ``momentum``).
    gen_weight, guide_weight : float
        Weights of the two collaborative costs (25 each).
    lam_l2d, lam_l2a : float
        The guide's regularisers lam_l2d * mean(f^2) (0.05) and lam_l2a * the mean
        squared maxout pre-activations (0.01).
    guide_loss : {'code2015', 'paper'}
        The guide's logistic loss: the 2015 code's ``0.5 softplus(-+2f)`` (default: the
        form that made the paper's figures; optimum f = log(D/G)/2) or Eq. 6's
        ``softplus(-+f)`` (optimum log(D/G)); see docs/deviations.md.
    guide_act_penalty : {'vgsn', 'code2015'}
        The form of the lam_l2a penalty: vgsn's ``sum_l mean(a_l^2)``, or the 2015
        code's ``sum_l pool * mean(a_l^2) + mean(c^2)`` with the bypassed classifier
        layer's output c (``PeaNet._act_reg_cost``; see docs/deviations.md).
    moment_weight : float
        Weight of the mean/covariance matching term (Sec. 5); 0 leaves it out.
    guide_units, guide_pool, guide_init_scale, guide_input_noise, guide_vis_drop,
    guide_hid_drop, guide_bias_noise
        ``MaxoutGuide``'s ``units``, ``pool``, ... (the ``guide_`` prefix keeps them
        apart from the model's ``init_scale``): 300 groups of 4 per layer, init 0.75
        (MNIST) / 1.0 (TFD), input noise 0 (MNIST) / 0.1 (TFD), dropout 0.2 on the
        input and 0.5 on the hidden layers, bias noise 0.1.
    data_rows : int
        Training images shown to the guide per update (200).
    bptt : {'stored', 'autodiff'}
        The chain's gradient: BPTT from stored activations, or autodiff through scan.
    unroll : {'scan', 'python'}
        The chain as one scan, or as a Python loop (a reference, slow to compile).

    Evaluation (Fig. 4)
    -------------------
    eval_every, scatter_every : int
        GPDE + bound on validation data; the (-log p(x|z), KL) scatter (0 = never).
    samples_at : tuple of int
        Updates (counted over the whole run) at which prior samples are drawn.
    gpde_samples : int
        Model samples used as Parzen centres (10,000).
    sigmas : {'mnist', 'tfd'}
        vgsn's Parzen sigma grid (``vgsn.eval.bound.MNIST_SIGMAS`` / ``TFD_SIGMAS``).
    paper_sigmas : {'mnist', 'mnist-var', 'tfd'} or None
        The paper-era script's grid (``vgsn.eval.bound.PAPER_SIGMAS``); None: the
        one named by ``sigmas``. mnist2-var uses 'mnist-var' (WalkoutResults.py l. 249).
    gpde_protocol : {'both', 'vgsn', 'paper'}
        Both protocols are always computed and written; this picks the headline of
        ``report.md`` and the "best during training" criterion ('paper': the
        paper protocol's ``gpde_paper_valid``).
    gpde_valid_rows, gpde_test_rows : int or None
        Rows of the validation / test set used by the GPDE (None: all).
    bound_rows, bound_samples : int or None, int
        Validation (and, at the end, test) rows and z samples for the bound.
    iwll_rows, iwll_k : int or None, int
        Test rows and samples for the importance-weighted log-likelihood (end of run).
    iwll_binarized : bool
        Bernoulli models: also the IWLL of the same test rows dynamically binarised
        (drawn once from the seed), the literature's comparable number at k = 5000.
    scatter_rows, scatter_passes : int
        Fig. 4c: 150 validation rows drawn at random (without repeats), each point
        the average over 10 passes.
    chain_rows, chain_length : int
        Chains drawn for the figures, and their length.
    patch_side : int or None
        Side of the occluded patch of controlled chains (None: 16/28 of the image
        side; the TFD script: 25).
    score_chains, score_steps : int
        Chain scores (``vgsn.eval.chainscore``, Fig. 3 measured) at every evaluation:
        chains from the first ``score_chains`` test images, ``score_steps`` steps;
        0 chains = off.
    tfd_fold : str
        TFD's fold ('all': the 2015 code; '0'..'4': the held-out per-fold protocol,
        report the mean over the five runs with ``vgsn.eval.bound.fold_summary``).

    Running
    -------
    checkpoint_every, log_every : int
        Checkpoint and metrics-row intervals (a checkpoint is also written at the
        fork and at the end).
    figures : bool
        Write the PNG figures (tests switch them off to save time).
    tensorboard : bool
        Also write every metrics row and the figures as TensorBoard events into the
        run folder as the run goes (``--tensorboard``; needs tensorboardX, the optional
        extra ``[tensorboard]``). Changes no number.
    seed : int
        Seeds the model (``seed``), the data order, the loop and guide (``seed + 2``)
        and every evaluation.

    The fields a constructor takes carry its argument's name (``q_hidden``,
    ``lr_gen``, ``lam_l2d``, ...): :func:`model_args`, :func:`guide_args` and
    :func:`loop_args` are the one mapping from a preset to ``OneStageModel``,
    ``MaxoutGuide`` and ``VCGLoop``. Configs written before the renames load
    through :meth:`from_dict` (see ``RENAMED``).
    """

    name: str = "custom"
    summary: str = ""
    figure: str = ""
    dataset: str = "mnist"
    fallback_dataset: str = None
    # model
    x_type: str = "bernoulli"
    q_hidden: tuple = (1500, 1500)
    p_hidden: tuple = (1500, 1500)
    z_dim: int = 64
    init_scale: float = 1.4
    logvar_bound: float = 6.0
    # SGD
    batch_size: int = 100
    batch_repeat: int = 5
    distinct_rows: bool = False
    momentum: float = 0.0
    max_norm: float = 10.0
    # pre-training
    pretrain_updates: int = 100_000
    pretrain_lr: float = 5e-4
    pretrain_warmup: int = 10_000
    pretrain_lr_decay: float = 0.9
    pretrain_lr_decay_every: int = 20_000
    pretrain_l2: float = 1e-5
    lam_kl: float = 1.0
    gamma_kl: float = 0.0
    kl_warmup: int = 10_000
    kl_warmup_from: float = 1.0
    pretrain_x_type: str = None
    pretrain_batch_repeat: int = None
    pretrain_momentum: float = None
    pretrain_momentum_late: float = None
    pretrain_momentum_switch: int = 0
    pretrain_momentum_warmup: int = 0
    # fork + guided chain
    chain_updates: int = 100_000
    vae_branch: bool = False
    steps: int = 6
    walkback: bool = False
    step_decay: float = 0.1
    gen_loss: str = "elastic"
    chain_gamma: bool = True
    lr_gen: float = 4e-4
    chain_warmup: int = 5_000
    chain_lr_decay: float = 0.9
    chain_lr_decay_every: int = 25_000
    chain_l2: float = 1e-4
    l2_on: str = "weights"
    lr_guide: float = None
    gen_weight: float = 25.0
    guide_weight: float = 25.0
    lam_l2d: float = 0.05
    lam_l2a: float = 0.01
    guide_loss: str = "code2015"
    guide_act_penalty: str = "vgsn"
    chain_momentum: float = None
    moment_weight: float = 0.0
    guide_units: int = 300
    guide_pool: int = 4
    guide_init_scale: float = 0.75
    guide_input_noise: float = 0.0
    guide_vis_drop: float = 0.2
    guide_hid_drop: float = 0.5
    guide_bias_noise: float = 0.1
    data_rows: int = 200
    bptt: str = "stored"
    unroll: str = "scan"
    # evaluation
    eval_every: int = 10_000
    scatter_every: int = 30_000
    samples_at: tuple = (30_000, 60_000, 120_000)
    gpde_samples: int = 10_000
    sigmas: str = "mnist"
    paper_sigmas: str = None
    gpde_protocol: str = "both"
    gpde_valid_rows: int = None
    gpde_test_rows: int = None
    bound_rows: int = None
    bound_samples: int = 1
    iwll_rows: int = 1000
    iwll_k: int = 1000
    iwll_binarized: bool = True
    scatter_rows: int = 150
    scatter_passes: int = 10
    chain_rows: int = 8
    chain_length: int = 50
    patch_side: int = None
    score_chains: int = 1000
    score_steps: int = 100
    tfd_fold: str = "all"
    # running
    checkpoint_every: int = 5_000
    log_every: int = 100
    figures: bool = True
    tensorboard: bool = False
    seed: int = 1234

    @property
    def total_updates(self):
        """Pre-training plus chain updates (the run's update counter ends here)."""
        return int(self.pretrain_updates) + int(self.chain_updates)

    @property
    def momentum_scheduled(self):
        """True when the 1-step VAE's momentum changes between updates (a switch or a
        warm-up: ``pretrain_momentum_switch`` / ``pretrain_momentum_warmup``)."""
        return int(self.pretrain_momentum_switch) > 0 or int(self.pretrain_momentum_warmup) > 0

    def to_dict(self):
        """The fields as a JSON-friendly dict (tuples become lists)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, values):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        values = dict(values)
        for old, new in RENAMED.items():
            if old in values:
                value = values.pop(old)
                for name in new:
                    values.setdefault(name, value)
        for old, only in RETIRED.items():
            if old in values and values[old] == only:
                del values[old]
        for name, old_value in ADDED.items():
            values.setdefault(name, old_value)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown preset field(s): {', '.join(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
        return cls(**kw)

    def validate(self):
        """Raise ``ValueError`` naming the first field with an impossible value.

        Every field is checked before anything is built or written: its type (only
        the optional fields, default None, take None; numbers are finite), then its
        range, so no setting fails hours into a run."""
        def need(cond, name, what):
            if not cond:
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")
        for f in fields(self):
            check_type(f.name, getattr(self, f.name))
        need(0 <= self.seed < 2 ** 32, "seed", "in [0, 2**32)")
        for name in ("max_norm", "logvar_bound", "init_scale", "guide_init_scale"):
            need(float(getattr(self, name)) > 0, name, "> 0")
        for name in ("chain_rows", "chain_length"):
            need(int(getattr(self, name)) >= 1, name, ">= 1")
        if self.total_updates > MAX_UPDATES:
            raise ValueError(f"pretrain_updates + chain_updates must be at most {MAX_UPDATES:,}, "
                             f"got {self.pretrain_updates:,} + {self.chain_updates:,}")
        for name in ("pretrain_updates", "chain_updates", "kl_warmup", "pretrain_warmup",
                     "chain_warmup", "pretrain_lr_decay_every", "chain_lr_decay_every",
                     "eval_every", "scatter_every", "checkpoint_every",
                     "pretrain_momentum_switch", "pretrain_momentum_warmup"):
            need(int(getattr(self, name)) >= 0, name, ">= 0")
        for name in ("z_dim", "batch_size", "batch_repeat", "steps", "guide_units",
                     "guide_pool", "data_rows", "gpde_samples", "bound_samples",
                     "iwll_k", "scatter_rows", "scatter_passes", "log_every"):
            need(int(getattr(self, name)) >= 1, name, ">= 1")
        need(self.total_updates >= 1, "pretrain_updates", "such that the run has at least 1 update")
        for name, allowed in (("x_type", X_TYPES), ("sigmas", SIGMA_GRIDS),
                              ("gen_loss", GENERATOR_LOSSES), ("guide_loss", GUIDE_LOSSES),
                              ("l2_on", L2_TARGETS),
                              ("bptt", BPTT_MODES), ("unroll", UNROLLS)):
            check(name, getattr(self, name), allowed)
        for name in ("q_hidden", "p_hidden"):
            need(len(getattr(self, name)) >= 1 and all(int(h) >= 1 for h in getattr(self, name)),
                 name, "one or more positive layer sizes")
        need(0.0 <= float(self.momentum) < 1.0, "momentum", "in [0, 1)")
        for name in ("pretrain_lr", "lr_gen", "lam_kl", "pretrain_lr_decay", "chain_lr_decay"):
            need(float(getattr(self, name)) > 0, name, "> 0")
        for name in ("gamma_kl", "pretrain_l2", "chain_l2", "step_decay", "gen_weight",
                     "guide_weight", "lam_l2d", "lam_l2a", "moment_weight", "guide_input_noise",
                     "guide_bias_noise"):
            need(float(getattr(self, name)) >= 0, name, ">= 0")
        for name in ("guide_vis_drop", "guide_hid_drop"):
            need(0.0 <= float(getattr(self, name)) < 1.0, name, "in [0, 1)")
        need(self.lr_guide is None or float(self.lr_guide) > 0, "lr_guide", "> 0 or None")
        for name in ("gpde_valid_rows", "gpde_test_rows", "bound_rows", "iwll_rows"):
            v = getattr(self, name)
            need(v is None or int(v) >= 1, name, ">= 1 or None (all rows)")
        self._validate_protocols()
        return self

    def _validate_protocols(self):
        """The evaluation-protocol and 2015-form fields."""
        for name, allowed in (("gpde_protocol", GPDE_HEADLINES), ("guide_act_penalty",
                              GUIDE_PENALTIES), ("paper_sigmas", (None,) + PAPER_GRIDS),
                              ("pretrain_x_type", (None,) + X_TYPES),
                              ("tfd_fold", TFD_FOLD_NAMES)):
            check(name, getattr(self, name), allowed)
        for name in ("pretrain_batch_repeat", "patch_side"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v!r}")
        for name in ("pretrain_momentum", "chain_momentum", "pretrain_momentum_late"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= float(v) < 1.0:
                raise ValueError(f"{name} must be in [0, 1) or None, got {v!r}")
        if (self.pretrain_momentum_late is None) != (int(self.pretrain_momentum_switch) == 0):
            raise ValueError(f"pretrain_momentum_late and pretrain_momentum_switch go together "
                             f"(the momentum and the update it starts at), got "
                             f"{self.pretrain_momentum_late!r} and "
                             f"{self.pretrain_momentum_switch!r}")
        if not 0.0 <= float(self.kl_warmup_from) <= max(1.0, float(self.lam_kl)):
            raise ValueError(f"kl_warmup_from must be in [0, max(1, lam_kl)], "
                             f"got {self.kl_warmup_from!r}")
        for name in ("score_chains", "score_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if int(self.score_chains) == 1 or (self.score_chains and int(self.score_steps) < 1):
            raise ValueError(f"score_chains must be 0 or >= 2 with score_steps >= 1, got "
                             f"{self.score_chains!r} chains x {self.score_steps!r} steps")



FIELD_TYPES = {f.name: f.type for f in fields(Preset)}
DEFAULTS = {f.name: f.default for f in fields(Preset)}

#: The most updates a run may have (pre-training + chain): a billion is decades of
#: the paper's runs, so anything above is a typo.
MAX_UPDATES = 10 ** 9


KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false",
               tuple: "comma-separated whole numbers", str: "text"}


def check_type(name, value):
    """``ValueError`` unless ``value`` has field ``name``'s type: None only for the
    optional fields (default None), whole numbers for int fields, finite numbers
    for float fields."""
    kind, default = FIELD_TYPES.get(name), DEFAULTS.get(name)
    if kind is None:
        return
    if value is None:
        if default is None:
            return
        raise ValueError(f"{name} must be {KIND_WORDS.get(kind, kind)}, got None (only "
                         f"optional settings take none)")
    if isinstance(default, tuple) or kind is tuple:
        ok = (isinstance(value, (tuple, list))
              and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value))
    elif kind is bool:
        ok = isinstance(value, bool) or type(value).__name__ == "bool_"   # numpy's, unimported
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif kind is float:
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(float(value)))
    elif kind is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        word = "a finite number" if kind is float else KIND_WORDS.get(kind, kind)
        raise ValueError(f"{name} must be {word}, got {value!r}")
