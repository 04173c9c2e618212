"""The paper's experiments (Sec. 7) as configs of plain fields.

Every number an experiment uses is a field of :class:`Preset` with the paper's
value as default, so a reader checks one place (SPEC.md sections 5-7). A preset
runs in two phases over one update counter:

1. ``pretrain_updates`` updates of the 1-step VAE (Fig. 1c, Eq. 3 / Eq. 5), then
2. the fork: ``chain_updates`` updates of the guided 6-step chain (VCGLoop, Sec. 5-6)
   and, with ``vae_branch`` (MNIST-1, Fig. 3), the same number of further 1-step
   VAE updates on an independent copy of the pre-trained model.

=============  ===========  =========  =======  =====================  ==================
preset         paper        x model    q/p      updates                KL (lambda, gamma)
=============  ===========  =========  =======  =====================  ==================
mnist1         Fig. 3       Bernoulli  2x1500   100k + 100k (and VAE)  1, 0
mnist2-ork     Fig. 4a-d    Gaussian   2x1000   80k + 120k             4, 0.1
mnist2-var     Fig. 4a-d    Gaussian   2x1000   80k + 120k             1, 0
mnist2-kl24    Sec. 7 text  Gaussian   2x1000   80k + 120k             24, 0.1
tfd-ork        Fig. 4e-h    Gaussian   2x2000   150k + 60k             5, 0.1
tfd-kl30       Sec. 7 text  Gaussian   2x2000   150k + 60k             30, 0.1
quick          demo         Bernoulli  2x200    1500 + 150 (and VAE)   1, 0
tfd-quick      demo         Gaussian   2x200    1500 + 150             5, 0.1
check-mnist1   Fig. 3       Bernoulli  2x500    3k + 400 (and VAE)     1, 0
check-ork      Fig. 4a-d    Gaussian   2x500    3k + 400               4, 0.1
check-var      Fig. 4a-d    Gaussian   2x500    3k + 400               1, 0
tiny           tests        Bernoulli  2x32     40 + 40 (and VAE)      1, 0
=============  ===========  =========  =======  =====================  ==================

The paper gives gamma (0.1) only for MNIST ORK: gamma 0.1 for TFD (tfd-ork,
tfd-kl30) and for mnist2-kl24, and the step-cost decay 0.1, are vgsn's
assumptions (the paper is silent). The ``check-*`` presets are short checks of
Sec. 7's claims (the three side by side in about an hour on 2 cores, see ``_CHECK``), run by
``python -m vgsn.reproduce``; their numbers test whether a claim shows at that
scale, not the paper's table.

Paper versus the 2015 code
--------------------------
Where the two differ the presets follow the paper; ``code2015()`` returns the
preset with the 2015 scripts' choices (``--code2015`` on the command line), or
set single fields (``--momentum 0.5``):

=======================  ===============================  ===============================
field                    paper (default)                  2015 code (``code2015``)
=======================  ===============================  ===============================
``momentum``             0.0 ("plain SGD")                0.5 (``mom_1=0.5``); TFD chain 0.9
                                                          (``chain_momentum``)
``step_decay``           0.1: every step's VAE cost       MNIST script 0.0 (step 0
                         counts (Sec. 3 and 6 train p on  only), TFD script 0.1
                         the unrolled pairs), decaying
                         as the 2015 VCGLoop's default
``chain_lr_decay_every`` 25k (what the code meant)        0 = never: its test
                                                          ``(i+1 % 25000) == 0`` never fires
``l2_on``                'weights': L2 decay on q/p       'all': every q/p parameter
                         weight matrices                  (biases, p's log-variance)
``chain_gamma``          True: Eq. 5's squared term in    False: the chain cost has
                         the chain's step costs too       lambda * KL only
``batch_size`` (TFD)     100 x 5 (Sec. 7)                 400 x 6 pre-training, 400 x 5
                                                          chain (``pretrain_batch_repeat``)
``guide_act_penalty``    'vgsn': sum_l mean(a_l^2)        'code2015': pool x that + the
                                                          bypassed classifier layer's term
``kl_warmup_from`` (TFD) 1 (MNIST scripts)                0 (``scale * lam_kld``)
``steps`` (TFD)          6                                5 (``chain_len=5``)
=======================  ===============================  ===============================

The paper gives no per-step weights; equal weights (decay 1) were tried and let
the later, easy-to-reconstruct chain states pull the 1-step bound down sharply
(quick demo: bound -242 against -151 with 0.1 after 200 chain updates), so the
presets keep the 2015 class default.

The demos (``quick``, ``tfd-quick``) shrink the nets, use 50 x 5 rows per update,
a higher learning rate (3e-3, plain SGD) and few updates, so the whole pipeline
runs in a minute or two on two CPU cores; their numbers check the pipeline, they
do not reproduce the paper.

Learning rates are not in the paper ("the code provides full details on learning
rates"), so they come from the 2015 scripts: MNIST pre-training 5e-4 with a
linear warm-up over 10k updates and x0.9 every 20k; chain 4e-4 with a 5k warm-up;
TFD pre-training 2e-3, warm-up 5k, x0.8 every 20k; chain 5e-4. The KL weight
warms up linearly from 1 to lambda over the first 10k pre-training updates (the
code's ``lam_kld_1 = 1 + scale * (lam_kld - 1)``).

Evaluation follows Fig. 4: GPDE (both protocols: sigma chosen on the validation
set, and the paper-era script's sigma chosen on the scored rows) and the variational
bound every ``eval_every`` (10k) updates with the chain scores (Fig. 3 measured),
the (-log p(x|z), KL) scatter of 150 validation rows drawn at random, each averaged
over 10 passes, every ``scatter_every`` (30k), prior samples at
``samples_at`` (30k / 60k / 120k), chains from data (free and under a 16x16
occluding patch) at the end of each phase; at the end the GPDE on the test set
(10,000 samples, sigma chosen on the validation set; beside it the paper
protocol), the bound and the importance-weighted estimate (labelled by what it is;
Bernoulli models also on dynamically binarised test rows).

The presets are plain data: nothing here builds a model or touches a file.
:func:`model_args`, :func:`guide_args` and :func:`loop_args` turn a preset into
the keyword arguments of ``OneStageModel``, ``MaxoutGuide`` and ``VCGLoop``: the
one place a field meets its constructor, under the constructor's own name.
"""
import math
import numbers
from dataclasses import dataclass, fields, replace

from vgsn.options import (BPTT_MODES, GENERATOR_LOSSES, L2_TARGETS, SIGMA_GRIDS, UNROLLS,
                          X_TYPES, check)

__all__ = ["Preset", "PRESETS", "PAPER_GPDE", "REFERENCE_GPDE", "get_preset", "code2015",
           "preset_names", "apply_overrides", "parse_value", "quick_for",
           "SCRIPT_PRESETS", "RENAMED", "CODE2015_TFD_UNDEFINED", "CHECK_PRESETS", "model_args", "chain_model_args", "rebuilt_at_fork",
           "guide_args", "loop_args", "loop_seed", "paper_grid"]

#: Fields renamed to their constructor's argument: old name -> new name(s). Configs
#: saved before (a run folder's ``config.json``, a checkpoint) still load.
RENAMED = {"hidden": ("q_hidden", "p_hidden"), "chain_steps": ("steps",),
           "chain_lr": ("lr_gen",), "guide_lr": ("lr_guide",), "guide_l2": ("lam_l2d",),
           "guide_data_rows": ("data_rows",)}
#: Fields that are gone (their only value was this); dropped when a config loads.
RETIRED = {"fault_at": None}

#: ``gpde_protocol``: which GPDE protocol ``report.md`` headlines (both are computed).
GPDE_HEADLINES = ("both", "vgsn", "paper")
#: ``paper_sigmas``: the paper-era script's grids (``vgsn.evaluation.PAPER_SIGMAS``).
PAPER_GRIDS = ("mnist", "mnist-var", "tfd")
#: ``guide_act_penalty``: vgsn's form of the guide's activation penalty, or the 2015 code's.
GUIDE_PENALTIES = ("vgsn", "code2015")
#: ``tfd_fold``: the 2015 code's 'all', or one held-out fold (``datasets.TFD_FOLDS``).
TFD_FOLD_NAMES = ("all", "0", "1", "2", "3", "4")

#: The paper's test-set GPDE (nats) per experiment (SPEC.md section 7).
PAPER_GPDE = {"mnist2-ork": 265.0, "mnist2-var": 220.0, "mnist2-kl24": 330.0,
              "tfd-ork": 2060.0, "tfd-kl30": 2130.0}

#: Earlier models on the same GPDE test, as the paper quotes them.
REFERENCE_GPDE = {
    "mnist": [("GSN (Bengio et al., 2014)", 214.0), ("GAN (Goodfellow et al., 2014)", 225.0)],
    "tfd": [("GAN (Goodfellow et al., 2014)", 2050.0),
            ("deep GSN / DAE (Bengio et al., 2013)", 2110.0)],
}


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
        vgsn's Parzen sigma grid (``vgsn.evaluation.MNIST_SIGMAS`` / ``TFD_SIGMAS``).
    paper_sigmas : {'mnist', 'mnist-var', 'tfd'} or None
        The paper-era script's grid (``vgsn.evaluation.PAPER_SIGMAS``); None: the
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
        Chain scores (``vgsn.chainscore``, Fig. 3 measured) at every evaluation:
        chains from the first ``score_chains`` test images, ``score_steps`` steps;
        0 chains = off.
    tfd_fold : str
        TFD's fold ('all': the 2015 code; '0'..'4': the held-out per-fold protocol,
        report the mean over the five runs with ``vgsn.evaluation.fold_summary``).

    Running
    -------
    checkpoint_every, log_every : int
        Checkpoint and metrics-row intervals (a checkpoint is also written at the
        fork and at the end).
    figures : bool
        Write the PNG figures (tests switch them off to save time).
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
    seed: int = 1234

    @property
    def total_updates(self):
        """Pre-training plus chain updates (the run's update counter ends here)."""
        return int(self.pretrain_updates) + int(self.chain_updates)

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
            _check_type(f.name, getattr(self, f.name))
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
                     "eval_every", "scatter_every", "checkpoint_every"):
            need(int(getattr(self, name)) >= 0, name, ">= 0")
        for name in ("z_dim", "batch_size", "batch_repeat", "steps", "guide_units",
                     "guide_pool", "data_rows", "gpde_samples", "bound_samples",
                     "iwll_k", "scatter_rows", "scatter_passes", "log_every"):
            need(int(getattr(self, name)) >= 1, name, ">= 1")
        need(self.total_updates >= 1, "pretrain_updates", "such that the run has at least 1 update")
        for name, allowed in (("x_type", X_TYPES), ("sigmas", SIGMA_GRIDS),
                              ("gen_loss", GENERATOR_LOSSES), ("l2_on", L2_TARGETS),
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
        """The evaluation-protocol and 2015-form fields (issue 15/16 additions)."""
        for name, allowed in (("gpde_protocol", GPDE_HEADLINES), ("guide_act_penalty",
                              GUIDE_PENALTIES), ("paper_sigmas", (None,) + PAPER_GRIDS),
                              ("pretrain_x_type", (None,) + X_TYPES),
                              ("tfd_fold", TFD_FOLD_NAMES)):
            check(name, getattr(self, name), allowed)
        for name in ("pretrain_batch_repeat", "patch_side"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v!r}")
        for name in ("pretrain_momentum", "chain_momentum"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= float(v) < 1.0:
                raise ValueError(f"{name} must be in [0, 1) or None, got {v!r}")
        if not 0.0 <= float(self.kl_warmup_from) <= max(1.0, float(self.lam_kl)):
            raise ValueError(f"kl_warmup_from must be in [0, max(1, lam_kl)], "
                             f"got {self.kl_warmup_from!r}")
        for name in ("score_chains", "score_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if int(self.score_chains) == 1 or (self.score_chains and int(self.score_steps) < 1):
            raise ValueError(f"score_chains must be 0 or >= 2 with score_steps >= 1, got "
                             f"{self.score_chains!r} chains x {self.score_steps!r} steps")


# ---------------------------------------------------------------------------
# THE mapping from a preset to the constructors (one place, their own names)
# ---------------------------------------------------------------------------

def model_args(c):
    """``OneStageModel`` keyword arguments of preset ``c``: all but ``x_dim`` and
    ``x_mean`` (the data's) and the scheduled hyperparameters ``lr``, ``lam_kl``,
    ``gamma_kl``, ``l2`` (``vgsn.train`` sets them before every update)."""
    def own(value, default):
        return default if value is None else value
    return dict(z_dim=c.z_dim, q_hidden=c.q_hidden, p_hidden=c.p_hidden,
                x_type=own(c.pretrain_x_type, c.x_type), init_scale=c.init_scale,
                logvar_bound=c.logvar_bound,
                batch_repeat=own(c.pretrain_batch_repeat, c.batch_repeat),
                momentum=own(c.pretrain_momentum, c.momentum), max_norm=c.max_norm,
                l2_on=c.l2_on, seed=c.seed)


def chain_model_args(c):
    """``OneStageModel`` keyword arguments after the fork: :func:`model_args` with the
    chain's ``x_type``, ``batch_repeat`` and ``momentum`` (they differ only where a
    preset sets ``pretrain_x_type`` / ``pretrain_batch_repeat`` / ``pretrain_momentum``)."""
    return dict(model_args(c), x_type=c.x_type, batch_repeat=c.batch_repeat,
                momentum=c.momentum)


def rebuilt_at_fork(c):
    """True when the chain phase needs a model built anew (other x_type / batch_repeat /
    momentum than pre-training), which then takes the pre-trained weights."""
    return model_args(c) != chain_model_args(c)


def loop_seed(c):
    """The seed of the guided chain (``VCGLoop(seed=)``) and of its guide's init."""
    return int(c.seed) + 2


def guide_args(c):
    """``MaxoutGuide`` keyword arguments of preset ``c``: all but ``n_in`` (the data's)
    and ``rng`` (``numpy.random.default_rng([loop_seed(c), 2])``)."""
    return dict(units=c.guide_units, pool=c.guide_pool, init_scale=c.guide_init_scale,
                vis_drop=c.guide_vis_drop, hid_drop=c.guide_hid_drop,
                bias_noise=c.guide_bias_noise, input_noise=c.guide_input_noise,
                act_penalty=c.guide_act_penalty)


def loop_args(c):
    """``VCGLoop`` keyword arguments of preset ``c``: all but ``model`` and ``guide``.
    ``lr_gen`` and ``lr_guide`` are the starting values (the chain phase's schedule
    scales both)."""
    return dict(steps=c.steps, walkback=c.walkback, step_decay=c.step_decay,
                gen_loss=c.gen_loss, chain_gamma=c.chain_gamma, moment_weight=c.moment_weight,
                data_rows=c.data_rows, lr_gen=c.lr_gen,
                lr_guide=c.lr_gen if c.lr_guide is None else c.lr_guide, lam_l2d=c.lam_l2d,
                lam_l2a=c.lam_l2a, gen_weight=c.gen_weight, guide_weight=c.guide_weight,
                momentum=c.momentum if c.chain_momentum is None else c.chain_momentum,
                max_norm=c.max_norm, bptt=c.bptt, unroll=c.unroll, seed=loop_seed(c))


def _mnist1(**kw):
    return Preset(
        name="mnist1", figure="Fig. 3",
        summary="MNIST-1 (Fig. 3): Bernoulli, 2x1500, z 64; 100k VAE, then fork: 100k guided "
                "6-step vs 100k more 1-step VAE",
        dataset="mnist", x_type="bernoulli", q_hidden=(1500, 1500), p_hidden=(1500, 1500), z_dim=64,
        pretrain_updates=100_000, chain_updates=100_000, vae_branch=True, **kw)


def _mnist2(name, summary, lam_kl, gamma_kl):
    return Preset(
        name=name, figure="Fig. 4a-d", summary=summary,
        dataset="mnist", x_type="gaussian", q_hidden=(1000, 1000), p_hidden=(1000, 1000), z_dim=50,
        pretrain_updates=80_000, chain_updates=120_000, lam_kl=lam_kl, gamma_kl=gamma_kl)


def _tfd(name, summary, lam_kl, gamma_kl):
    return Preset(
        name=name, figure="Fig. 4e-h", summary=summary,
        dataset="tfd", x_type="gaussian", q_hidden=(2000, 2000), p_hidden=(2000, 2000), z_dim=100,
        pretrain_updates=150_000, chain_updates=60_000, lam_kl=lam_kl, gamma_kl=gamma_kl,
        pretrain_lr=2e-3, pretrain_warmup=5_000, pretrain_lr_decay=0.8, lr_gen=5e-4,
        chain_lr_decay=0.8, guide_init_scale=1.0, guide_input_noise=0.1, sigmas="tfd",
        samples_at=(30_000, 90_000, 150_000, 210_000))


# Demo sizes: tiny nets and few updates, the pipeline unchanged.
_DEMO = dict(
    q_hidden=(200, 200), p_hidden=(200, 200), z_dim=20, batch_size=50, batch_repeat=5,
    pretrain_updates=1500, chain_updates=150, pretrain_lr=3e-3, pretrain_warmup=50,
    pretrain_lr_decay_every=0, kl_warmup=200, lr_gen=1e-3, chain_warmup=20,
    chain_lr_decay_every=0, guide_units=64, guide_pool=4, data_rows=100,
    eval_every=500, scatter_every=750, samples_at=(500, 1500, 1650),
    gpde_samples=2000, gpde_valid_rows=1000, gpde_test_rows=1000, bound_rows=1000,
    bound_samples=1, iwll_rows=200, iwll_k=100, scatter_rows=150, scatter_passes=10,
    chain_rows=6, chain_length=30, score_chains=300, score_steps=30, checkpoint_every=300,
    log_every=25)

# The short checks of the paper's claims (issue 16), sized so that the three of them
# run side by side on 2 cores in about an hour: half the 2015 MNIST script's widths
# (q/p 2 x 500, z 32), 50 x 5 chain rows and 100 guide data rows (half the paper's),
# the paper's 6-step chain and 300 x 4 guide; 3,000 pre-training updates (lr 1e-3,
# 300-update warm-up, KL warm-up 1,000) and 400 guided updates (lr 1e-3, 50-update
# warm-up); evaluation every 500 updates on 1,000 validation / 2,000 test rows with
# 3,000 Parzen centres, chain scores of 300 chains x 50 steps. The 2 x 1000 sizes
# (a VAE update 0.2 s, a guided update 2.8 s on this machine when quiet) would make
# one run take about 40 minutes alone: set q_hidden/p_hidden=1000,1000, z_dim=50,
# batch_size=100, data_rows=200 for that.
_CHECK = dict(
    dataset="mnist", q_hidden=(500, 500), p_hidden=(500, 500), z_dim=32, batch_size=50,
    data_rows=100, pretrain_updates=3000, chain_updates=400, pretrain_lr=1e-3,
    pretrain_warmup=300, pretrain_lr_decay_every=0, kl_warmup=1000, lr_gen=1e-3,
    chain_warmup=50, chain_lr_decay_every=0, eval_every=500, scatter_every=1700,
    samples_at=(1500, 3000, 3400), gpde_samples=3000, gpde_valid_rows=1000,
    gpde_test_rows=2000, bound_rows=2000, iwll_rows=500, iwll_k=200, chain_rows=8,
    chain_length=50, score_chains=300, score_steps=50, checkpoint_every=250, log_every=25)
_CHECK_NOTE = ("2x500, z 32, 50 x 5 chain rows (half the 2015 MNIST script's); 3k VAE "
               "updates (lr 1e-3, warm-up 300) + 400 guided (lr 1e-3, warm-up 50); the three "
               "checks side by side in about an hour on 2 cores")

PRESETS = {p.name: p for p in [
    _mnist1(),
    _mnist2("mnist2-ork", "MNIST-2 ORK (Fig. 4a-d): Gaussian, 2x1000, z 50, lambda 4, gamma 0.1; "
            "80k VAE + 120k guided 6-step (paper GPDE 265)", 4.0, 0.1),
    replace(_mnist2("mnist2-var", "MNIST-2 VAR (Fig. 4a-d): as mnist2-ork with the plain free "
                    "energy (lambda 1, gamma 0) (paper GPDE 220)", 1.0, 0.0),
            paper_sigmas="mnist-var"),
    _mnist2("mnist2-kl24", "MNIST-2 with KL weight 24 (Sec. 7 text): lambda 24, gamma 0.1 "
            "(paper GPDE 330)", 24.0, 0.1),
    _tfd("tfd-ork", "TFD ORK (Fig. 4e-h): Gaussian, 2x2000, z 100, lambda 5, gamma 0.1; "
         "150k VAE + 60k guided 6-step (paper GPDE 2060)", 5.0, 0.1),
    _tfd("tfd-kl30", "TFD with KL weight 30 (Sec. 7 text): lambda 30, gamma 0.1 "
         "(paper GPDE 2130)", 30.0, 0.1),
    Preset(name="quick", figure="demo",
           summary="demo of mnist1 in minutes on a CPU: 2x200, z 20, 1500 VAE, then 150 guided / "
                   "150 VAE updates; MNIST if present, else the bundled 8x8 digits",
           dataset="mnist", fallback_dataset="digits", x_type="bernoulli", vae_branch=True,
           **_DEMO),
    Preset(name="tfd-quick", figure="demo",
           summary="demo of tfd-ork in minutes on a CPU: 2x200, z 20, 1500 VAE + 150 guided; "
                   "TFD if present, else a face stand-in (olivetti, frey)",
           dataset="tfd", fallback_dataset="olivetti,frey", x_type="gaussian", lam_kl=5.0,
           gamma_kl=0.1, sigmas="tfd", guide_init_scale=1.0, guide_input_noise=0.1, **_DEMO),
    Preset(name="check-mnist1", figure="Fig. 3 (short check)",
           summary="short check of Fig. 3's claim, Bernoulli, guided vs 1-step VAE chains: "
                   + _CHECK_NOTE, x_type="bernoulli", vae_branch=True, **_CHECK),
    Preset(name="check-ork", figure="Fig. 4a-d (short check)",
           summary="short check of MNIST-2 ORK (Gaussian, lambda 4, gamma 0.1): " + _CHECK_NOTE,
           x_type="gaussian", lam_kl=4.0, gamma_kl=0.1, **_CHECK),
    Preset(name="check-var", figure="Fig. 4a-d (short check)",
           summary="short check of MNIST-2 VAR (Gaussian, lambda 1, gamma 0): " + _CHECK_NOTE,
           x_type="gaussian", lam_kl=1.0, gamma_kl=0.0, paper_sigmas="mnist-var", **_CHECK),
    Preset(name="tiny", figure="tests",
           summary="the test suite's run: bundled 8x8 digits, 64-32-32-4, 40 VAE + 40 guided / "
                   "40 VAE updates, every evaluation and figure",
           dataset="digits", x_type="bernoulli", q_hidden=(32, 32), p_hidden=(32, 32), z_dim=4, batch_size=20,
           batch_repeat=2, pretrain_updates=40, chain_updates=40, vae_branch=True,
           pretrain_lr=2e-3, pretrain_warmup=5, pretrain_lr_decay_every=20, kl_warmup=10,
           steps=3, lr_gen=1e-3, chain_warmup=5, chain_lr_decay_every=20,
           guide_units=8, guide_pool=2, data_rows=20, eval_every=20, scatter_every=40,
           samples_at=(40, 80), gpde_samples=200, gpde_valid_rows=100, gpde_test_rows=100,
           bound_rows=100, iwll_rows=20, iwll_k=10, scatter_rows=20, scatter_passes=2,
           chain_rows=3, chain_length=6, score_chains=12, score_steps=4, checkpoint_every=15,
           log_every=5, momentum=0.5),
]}

#: The short checks of Sec. 7's claims (``vgsn.reproduce`` runs them).
CHECK_PRESETS = ("check-mnist1", "check-ork", "check-var")

#: Which presets each script offers (``run_mnist.py --help`` / ``run_tfd.py --help``).
SCRIPT_PRESETS = {
    "mnist": ["mnist1", "mnist2-ork", "mnist2-var", "mnist2-kl24", "quick", "check-mnist1",
              "check-ork", "check-var", "tiny"],
    "tfd": ["tfd-ork", "tfd-kl30", "tfd-quick"],
}


def quick_for(script):
    """The ``--quick`` preset of a script ('mnist' or 'tfd')."""
    return {"mnist": "quick", "tfd": "tfd-quick"}[script]


def preset_names(script=None):
    """All preset names, or those a script offers."""
    return list(PRESETS) if script is None else list(SCRIPT_PRESETS[script])


def get_preset(name):
    """A fresh copy of the named preset; ``KeyError`` lists the known names."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name])


def paper_grid(c):
    """The name of preset ``c``'s paper-era sigma grid (a key of
    ``vgsn.evaluation.PAPER_SIGMAS``): ``paper_sigmas``, else the one ``sigmas`` names."""
    return c.paper_sigmas or ("tfd" if c.sigmas == "tfd" else "mnist")


#: What ``code2015`` cannot give for TFD: the script's parts that are not well defined
#: or that vgsn does not run (``report.md`` prints these lines for such a run).
CODE2015_TFD_UNDEFINED = (
    "the published TFDWalkoutTest.py stops on its first pre-training update: "
    "set_lam_kld(..., lam_kld_c=50.0) (l. 219) is not an argument OneStageModel.set_lam_kld "
    "accepts; ignoring it (it gated the squared KL term, which is 0) is the only reading "
    "that runs, and vgsn runs that",
    "its __main__ calls only pretrain_osm(lam_kld=1.0): the chain phase is never run, so its "
    "settings are read from the chain function the script defines",
    "its KL weights (1 / 15 / 60, l. 425-434) are none of the paper's 5 or 30: the preset's "
    "lambda is kept",
    "pre-training momentum 0.5 is kept throughout: the script's switch to 0.9 after 50k "
    "updates and its momentum x warm-up factor (l. 196-201, 217) are not run (vgsn's "
    "momentum is fixed when a model compiles)",
    "the TFD Parzen numbers of the paper era (WalkoutResults.check_tfd_walkout) chose sigma on "
    "fold 'all' validation rows; no test-split script survives",
)


def code2015(preset):
    """The preset with the 2015 scripts' choices where they differ from the paper.

    All presets: momentum 0.5; the chain learning rate never decays (the
    script's decay test ``(i+1 % 25000) == 0`` never fires); L2 decay on every
    q/p parameter; no squared KL term in the chain cost; the guide's activation
    penalty in the code's form (``guide_act_penalty='code2015'``); minibatches with
    replacement (``distinct_rows=False``, the default). MNIST: step-cost decay 0.0
    (only step 0 carries the VAE cost).

    TFD, what ``TFDWalkoutTest.py`` would have run (line numbers of ICML-2015
    f1bf969) where that is well defined: the script's nets, z 50 and q/p 2 x 1500
    (l. 24, 121, 135); pre-training Bernoulli (l. 172), the chain Gaussian (l. 346;
    its shared log-variance starts training at the fork); pre-training batch
    400 x 6 (l. 103-104), chain 400 x 5 (l. 298-299), guide data 800 rows
    (l. 380); momentum 0.5 in pre-training, 0.9 in the chain (l. 370); the KL
    weight rising from 0 to lambda over 5k updates (l. 193, 219), gamma 0
    (``lam_kld_2=0.0``); a 5-step walkout chain with step decay 0.1 (l. 349-353);
    100k pre-training updates, after which the chain starts from that checkpoint
    and runs 100k updates (l. 336-337, 362); the occluded patch 25 x 25 (l. 406).
    Not well defined, or not run by vgsn: :data:`CODE2015_TFD_UNDEFINED`.
    """
    tfd = preset.dataset == "tfd"
    changes = dict(momentum=0.5, step_decay=0.1 if tfd else 0.0, chain_lr_decay_every=0,
                   l2_on="all", chain_gamma=False, guide_act_penalty="code2015",
                   distinct_rows=False)
    if tfd:
        changes.update(z_dim=50, q_hidden=(1500, 1500), p_hidden=(1500, 1500),
                       pretrain_x_type="bernoulli", x_type="gaussian", batch_size=400,
                       pretrain_batch_repeat=6, batch_repeat=5, steps=5, data_rows=800,
                       pretrain_momentum=0.5, chain_momentum=0.9, kl_warmup=5000,
                       kl_warmup_from=0.0, gamma_kl=0.0, pretrain_updates=100_000,
                       chain_updates=100_000, patch_side=25)
    return replace(preset, **changes)


_FIELD_TYPES = {f.name: f.type for f in fields(Preset)}
_DEFAULTS = {f.name: f.default for f in fields(Preset)}

#: The most updates a run may have (pre-training + chain): a billion is decades of
#: the paper's runs, so anything above is a typo.
MAX_UPDATES = 10 ** 9


def _check_type(name, value):
    """``ValueError`` unless ``value`` has field ``name``'s type: None only for the
    optional fields (default None), whole numbers for int fields, finite numbers
    for float fields."""
    kind, default = _FIELD_TYPES.get(name), _DEFAULTS.get(name)
    if kind is None:
        return
    if value is None:
        if default is None:
            return
        raise ValueError(f"{name} must be {_KIND_WORDS.get(kind, kind)}, got None (only "
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
        word = "a finite number" if kind is float else _KIND_WORDS.get(kind, kind)
        raise ValueError(f"{name} must be {word}, got {value!r}")
_KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false",
               tuple: "comma-separated whole numbers", str: "text"}


def _unknown(name):
    """The one-line message for a setting that is not a field (renamed ones say so)."""
    renamed = f" (renamed: {', '.join(RENAMED[name])})" if name in RENAMED else ""
    return f"unknown setting {name!r}{renamed}; known: {', '.join(_FIELD_TYPES)}"


def parse_value(name, text):
    """Parse a command-line string for field ``name`` into the field's type.

    ``none`` gives None (for the optional fields); tuples are comma-separated
    ('1000,1000'); booleans accept true/false/1/0/yes/no.
    Raises ``ValueError`` with a one-line message.
    """
    if name not in _FIELD_TYPES:
        raise ValueError(_unknown(name))
    kind, default = _FIELD_TYPES[name], _DEFAULTS[name]
    text = str(text).strip()
    if text.lower() == "none":
        if default is None:
            return None
        raise ValueError(f"{name} must be {_KIND_WORDS.get(kind, kind)}, got {text!r} (only "
                         f"optional settings take none)")
    try:
        if kind is tuple or isinstance(default, tuple):
            return tuple(int(v) for v in text.split(",") if v.strip())
        if kind is bool:
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return low in ("true", "1", "yes")
        if kind is int:
            try:
                return int(text)          # exact, however large (validate bounds it)
            except ValueError:
                value = float(text)       # 1e4
            if not math.isfinite(value) or value != int(value):
                raise ValueError(text)
            return int(value)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {text!r}")
            return value
        return text
    except ValueError:
        word = "a finite number" if kind is float else _KIND_WORDS.get(kind, kind)
        raise ValueError(f"{name} must be {word}, got {text!r}") from None


def apply_overrides(preset, changes):
    """``preset`` with the fields in ``changes`` (name -> typed value) replaced;
    ``ValueError`` names an unknown field."""
    unknown = [name for name in changes if name not in _FIELD_TYPES]
    if unknown:
        raise ValueError(_unknown(unknown[0]))
    return replace(preset, **changes)
