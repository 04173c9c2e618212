"""The allowed values of vgsn's choice arguments, in one place.

Both ``vgsn.run.presets`` (plain data, no symbolic library) and the modules that build
graphs (``vgsn.model.vae``, ``vgsn.model.chain``, ``vgsn.model.objectives``) import these tuples and
:func:`check` from here, so a value is allowed or refused by the same words
everywhere. This module imports nothing.
"""

__all__ = ["X_TYPES", "L2_TARGETS", "GENERATOR_LOSSES", "GUIDE_LOSSES", "GUIDE_LOSS_NAMES",
           "BPTT_MODES", "UNROLLS", "SIGMA_GRIDS", "check"]

#: p(x|z): Bernoulli, or Gaussian with one shared bounded log-variance (SPEC.md section 1).
X_TYPES = ("bernoulli", "gaussian")
#: What the L2 decay acts on: q's and p's weight matrices, or every q/p parameter (2015 code).
L2_TARGETS = ("weights", "all")
#: The generator's loss on the guide's output, Eq. 7.
GENERATOR_LOSSES = ("elastic", "abs")
#: The guide's logistic loss: the 2015 code's form (0.5 softplus(-2f) / 0.5 softplus(2f),
#: optimum f = log(D/G) / 2), or the paper's Eq. 6 (softplus(-f) / softplus(f), optimum
#: log(D/G)).
GUIDE_LOSSES = ("code2015", "paper")
#: How logs and reports name each guide loss form.
GUIDE_LOSS_NAMES = {"code2015": "the 2015 code's 0.5 softplus(-+2f)",
                    "paper": "Eq. 6, softplus(-+f)"}
#: The chain's gradient: BPTT from stored activations, or autodiff through the scan.
BPTT_MODES = ("stored", "autodiff")
#: How the T chain steps are built: one symbolic scan, or a Python loop (a reference).
UNROLLS = ("scan", "python")
#: The Parzen sigma grids of ``vgsn.eval.bound`` (MNIST_SIGMAS, TFD_SIGMAS).
SIGMA_GRIDS = ("mnist", "tfd")


def check(name, value, allowed):
    """Return ``value`` if it is one of ``allowed``; else ``ValueError`` in one line:
    ``x_type must be one of ('bernoulli', 'gaussian'), got 'poisson'``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value
