"""vgsn: Variational Generative Stochastic Networks with Collaborative Shaping (ICML 2015).

The public names, for scripts and notebooks::

    import vgsn
    models = vgsn.load_models("runs/mnist1")          # a run folder's models and guide
    X = models["model"].sample_prior(100)             # (100, 784) numpy array
    data = vgsn.load_dataset("mnist")
    states = models["model"].run_chain(data.test[:8], steps=50)
    scores = vgsn.chain_scores(vgsn.scorer_for(data), states, data.test)

Each name is imported on first use, so ``import vgsn`` is fast and does not start the
symbolic library (``vgsn.backend``) until a model is needed. The layout of the package
is in ``docs/internals.md``.
"""
import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    # the models (Sec. 4-6)
    "OneStageModel": "vgsn.model.vae",
    "VCGLoop": "vgsn.model.vcg",
    "InfNet": "vgsn.model.nets",
    "MaxoutGuide": "vgsn.model.nets",
    # data
    "load_dataset": "vgsn.data.datasets",
    "Dataset": "vgsn.data.datasets",
    "DatasetError": "vgsn.data.files",
    # a run folder
    "load_models": "vgsn.run.train",
    # the 2015 code's saved networks
    "load_2015_model": "vgsn.compat2015.convert",
    "load_2015_guide": "vgsn.compat2015.convert",
    "load_2015_loop": "vgsn.compat2015.convert",
    "export_2015_model": "vgsn.compat2015.convert",
    "export_2015_guide": "vgsn.compat2015.convert",
    # evaluation
    "gpde": "vgsn.eval.gpde",
    "gpde_paper": "vgsn.eval.gpde",
    "gpde_both": "vgsn.eval.gpde",
    "model_gpde": "vgsn.eval.gpde",
    "parzen_log_likelihood": "vgsn.eval.parzen",
    "variational_bound": "vgsn.eval.bound",
    "importance_weighted_ll": "vgsn.eval.bound",
    "binarized_iwll": "vgsn.eval.bound",
    "scorer_for": "vgsn.eval.chainscore",
    "reference": "vgsn.eval.chainscore",
    "chain_scores": "vgsn.eval.chainscore",
    "sample_scores": "vgsn.eval.chainscore",
    "frechet_distance": "vgsn.eval.chainscore",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'vgsn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value            # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
