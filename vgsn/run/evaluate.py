"""What a run's evaluation computes: the fixed evaluation rows and one row of numbers.

``vgsn.run.train.Run.evaluate`` calls :func:`eval_row` once per branch; this module
turns ``vgsn.eval.bound`` (GPDE in both protocols, the bound, the IWLL of grey and
of binarised rows) and ``vgsn.eval.chainscore`` (chain cleanliness, mixing, Frechet
distance: Fig. 3 measured) into the flat columns of ``eval.csv``
(``vgsn.run.folder.EVAL_COLUMNS``) and writes the per-step chain scores to
``evals/chainscores_<branch>_u<update>.npz``. Nothing here trains or prints.

Every random draw comes from a generator the caller fixes by (seed, branch,
purpose, update), so a resumed run evaluates to the same numbers.
"""
from pathlib import Path

import numpy as np

from vgsn.eval import bound as ev
from vgsn.eval import gpde as gp
from vgsn.eval import parzen as pz
from vgsn.run import presets as P

__all__ = ["EvalSets", "ChainScorer", "SCORE_COLUMNS", "PER_STEP_KEYS", "eval_row", "log_line",
           "chain_score_columns"]

#: Summary floats of the chain scores in ``eval.csv`` (empty where a scorer has none:
#: faces have no classes, digits no ``frechet_pca``).
SCORE_COLUMNS = ["score_chains", "score_steps", "confidence_test", "confidence_start",
                 "confidence_final", "switch_rate_mean", "classes_visited_mean",
                 "never_switched", "frechet_start", "frechet_final", "frechet_mean",
                 "frechet_pca_start", "frechet_pca_final", "frechet_pca_mean",
                 "prior_confidence", "prior_frechet", "prior_frechet_pca",
                 "class_tv_start", "class_tv_final", "class_tv_mean", "digit_score_test",
                 "digit_score_start", "digit_score_final", "digit_score_mean",
                 "top_class_final", "top_class_frac_final", "confidence_outside_top_final",
                 "prior_class_tv", "prior_digit_score"]

#: The per-step arrays kept in ``evals/chainscores_*.npz``.
PER_STEP_KEYS = ("step", "confidence", "switch_rate", "frechet", "frechet_pca", "class_freq",
                 "classes_visited", "first_switch", "class_tv", "digit_score", "top_class",
                 "top_class_frac", "confidence_by_class")


def _first(X, n):
    return X if n is None else X[:int(n)]


class EvalSets:
    """The fixed rows every evaluation of a run uses (drawn once, from the seed).

    Attributes
    ----------
    gpde_valid, gpde_test, bound_valid, bound_test, iwll : ndarray (rows, D)
        The first ``*_rows`` rows of the validation / test split.
    iwll_bin : ndarray or None
        ``iwll`` dynamically binarised once (``ev.binarize``, generator
        ``[seed, 8]``): the same binary rows for every branch; None for a
        Gaussian model or ``iwll_binarized=False``.
    scatter_idx, scatter : ndarray
        Fig. 4c: ``scatter_rows`` validation rows drawn at random without repeats
        (generator ``[seed, 9]``; the 2015 script drew with replacement).
    score_starts : ndarray (score_chains, D)
        The first ``score_chains`` test images, where the scored chains start.
    sigmas, paper_sigmas : ndarray
        vgsn's and the paper's Parzen grids.
    """

    def __init__(self, c, data):
        self.gpde_valid = _first(data.valid, c.gpde_valid_rows)
        self.gpde_test = _first(data.test, c.gpde_test_rows)
        self.bound_valid = _first(data.valid, c.bound_rows)
        self.bound_test = _first(data.test, c.bound_rows)
        self.iwll = _first(data.test, c.iwll_rows)
        self.iwll_bin = None
        if c.x_type == "bernoulli" and c.iwll_binarized:
            self.iwll_bin = ev.binarize(self.iwll, np.random.default_rng([c.seed, 8]))
        n = min(int(c.scatter_rows), len(data.valid))
        self.scatter_idx = np.sort(np.random.default_rng([c.seed, 9]).choice(
            len(data.valid), n, replace=False))
        self.scatter = data.valid[self.scatter_idx]
        self.score_starts = data.test[:min(int(c.score_chains), len(data.test))]
        self.sigmas = gp.TFD_SIGMAS if c.sigmas == "tfd" else gp.MNIST_SIGMAS
        self.paper_sigmas = gp.PAPER_SIGMAS[P.paper_grid(c)]

    def counts(self):
        """Rows behind each number (for the report)."""
        return {"gpde_valid": len(self.gpde_valid), "gpde_test": len(self.gpde_test),
                "bound_test": len(self.bound_test), "iwll": len(self.iwll),
                "scatter": len(self.scatter), "score_chains": len(self.score_starts)}


class ChainScorer:
    """The run's chain scorer, built once on first use: ``chainscore.scorer_for`` (the
    digit classifier, cached under the run's data folder, or a PCA of the training
    faces) and its reference statistics on the test images.

    Parameters
    ----------
    data : vgsn.data.datasets.Dataset
    data_dir : str or None
        The folder the data came from (the classifier's cache lives beside it).
    """

    def __init__(self, data, data_dir=None):
        self.data, self.data_dir = data, data_dir
        self._scorer = self._ref = None

    def _build(self):
        if self._scorer is None:
            from vgsn.eval import chainscore as cs
            self._scorer = cs.scorer_for(self.data, data_dir=self.data_dir)
            self._ref = cs.reference(self._scorer, self.data.test)
        return self._scorer, self._ref

    @property
    def kind(self):
        """'classifier' or 'pca' (what the Frechet features are)."""
        scorer, _ = self._build()
        return "classifier" if scorer.has_classes else "pca"

    def chains(self, states):
        from vgsn.eval import chainscore as cs
        scorer, ref = self._build()
        return cs.chain_scores(scorer, states, ref)

    def samples(self, X):
        from vgsn.eval import chainscore as cs
        scorer, ref = self._build()
        return cs.sample_scores(scorer, X, ref)


def chain_score_columns(scores, prior):
    """The :data:`SCORE_COLUMNS` of one chain-score dict and one prior-sample dict
    (``chainscore.chain_scores`` / ``sample_scores``); missing ones are None."""
    row = {k: None for k in SCORE_COLUMNS}
    for k in SCORE_COLUMNS:
        if k in scores and np.ndim(scores[k]) == 0:
            row[k] = float(scores[k]) if k not in ("chains", "steps") else int(scores[k])
    row["score_chains"], row["score_steps"] = int(scores["chains"]), int(scores["steps"])
    if "confidence" in scores:
        row["confidence_start"] = float(scores["confidence"][0])
        row["class_tv_start"] = float(scores["class_tv"][0])
        row["digit_score_start"] = float(scores["digit_score"][0])
    row["prior_class_tv"] = prior.get("class_tv")
    row["prior_digit_score"] = prior.get("digit_score")
    row["prior_confidence"] = prior.get("confidence")
    row["prior_frechet"] = prior.get("frechet")
    row["prior_frechet_pca"] = prior.get("frechet_pca")
    return row


def _save_scores(out, branch, update, scores):
    path = Path(out) / "evals" / f"chainscores_{branch}_u{int(update):07d}.npz"
    np.savez(path, **{k: np.asarray(scores[k]) for k in PER_STEP_KEYS if k in scores},
             confidence_test=np.nan if scores.get("confidence_test") is None
             else scores["confidence_test"])
    return path


def eval_row(c, sets, scorer, model, branch, update, phase, final, rng, out):
    """One evaluation row of a branch.

    Parameters
    ----------
    c : vgsn.run.presets.Preset
    sets : EvalSets
    scorer : ChainScorer or None
        None (or ``score_chains = 0``) leaves the chain-score columns empty.
    model : OneStageModel
    branch, update, phase, final
        The row's labels; ``final`` adds the test bound and the IWLLs.
    rng : callable purpose -> numpy Generator
        ``Run.eval_rng`` bound to the branch (purposes 0-3 and 10-11 here).
    out : Path
        The run folder (the per-step chain scores go to ``evals/``).

    Returns
    -------
    dict
        The columns of ``vgsn.run.folder.EVAL_COLUMNS`` this row has, and
        ``gpde_engine`` (``'numpy'`` or ``'jax'``: where the GPDE ran,
        ``pz.parzen_engine('auto')``), which ``metrics.jsonl`` keeps and
        ``eval.csv`` does not list.
    """
    centres = np.asarray(model.sample_prior(int(c.gpde_samples), rng=rng(0)))
    row = {"update": update, "phase": phase, "branch": branch,
           "kind": "final" if final else "eval"}
    # 'auto': on the JAX device in a JAX-mode run (float32), numpy float64 otherwise.
    engine = pz.parzen_engine("auto")
    g = gp.gpde_both(centres, sets.gpde_valid, sets.gpde_test, sigmas=sets.sigmas,
                     paper_sigmas=sets.paper_sigmas, engine=engine)
    row.update(g)
    row["gpde_engine"] = engine
    row["gpde_sigma_at_edge"] = bool(g["gpde_sigma_at_edge"])
    row["gpde_paper_sigma_at_edge"] = bool(g["gpde_paper_sigma_at_edge"])
    # The bound's two terms, from the same draws (variational_bound gives their sum).
    nll, kl = model.free_energy_terms(sets.bound_valid, n_samples=c.bound_samples, rng=rng(1))
    row.update(bound_valid=-float(np.mean(nll + kl)), nll_valid=float(np.mean(nll)),
               kl_valid=float(np.mean(kl)), bound_test=None, iwll_test=None, iwll_k=None,
               iwll_kind=None, iwll_bin_test=None)
    if final:
        row["bound_test"] = float(np.mean(ev.variational_bound(
            model, sets.bound_test, k=c.bound_samples, rng=rng(2))))
        row["iwll_test"] = float(np.mean(ev.importance_weighted_ll(
            model, sets.iwll, c.iwll_k, rng=rng(3))))
        row["iwll_k"] = int(c.iwll_k)
        row["iwll_kind"] = ev.iwll_kind(c.x_type)
        if sets.iwll_bin is not None:
            row["iwll_bin_test"] = float(np.mean(ev.importance_weighted_ll(
                model, sets.iwll_bin, c.iwll_k, rng=rng(11))))
    row.update({k: None for k in SCORE_COLUMNS})
    if scorer is not None and len(sets.score_starts) >= 2 and c.score_steps >= 1:
        states = model.run_chain(sets.score_starts, int(c.score_steps), rng=rng(10))
        scores = scorer.chains(states)
        row.update(chain_score_columns(scores, scorer.samples(centres)))
        _save_scores(out, branch, update, scores)
    return row


def log_line(c, row, update, branch, final):
    """The log line of one evaluation row: each number says which protocol it is."""
    edge = ", at the grid edge" if row["gpde_sigma_at_edge"] else ""
    text = (f"update {update:,} {branch}: GPDE test {row['gpde_test']:.1f} +- "
            f"{row['gpde_test_stderr']:.1f} (sigma {row['gpde_sigma']:.3g} held out{edge}; "
            f"valid {row['gpde_valid']:.1f}) | paper protocol {row['gpde_paper_test']:.1f} "
            f"(sigma {row['gpde_paper_sigma']:.3g} on the test rows) | bound valid "
            f"{row['bound_valid']:.1f}")
    if final:
        text += f", bound test {row['bound_test']:.1f}, IWLL(k={c.iwll_k}) test {row['iwll_test']:.1f}"
        if row.get("iwll_bin_test") is not None:
            text += f", binarised {row['iwll_bin_test']:.1f}"
    if row.get("score_chains"):
        if row.get("confidence_final") is not None:
            text += (f" | chains: confidence {row['confidence_start']:.3f} -> "
                     f"{row['confidence_final']:.3f} (test {row['confidence_test']:.3f}), "
                     f"switch rate {row['switch_rate_mean']:.3f}, Frechet "
                     f"{row['frechet_final']:.1f} (prior {row['prior_frechet']:.1f}), class TV "
                     f"{row['class_tv_final']:.3f}, digit score {row['digit_score_final']:.2f} "
                     f"(test {row['digit_score_test']:.2f}), top class "
                     f"{row['top_class_final']} on {row['top_class_frac_final']:.0%}")
        else:
            text += (f" | chains: Frechet (PCA) {row['frechet_pca_final']:.1f} (prior "
                     f"{row['prior_frechet_pca']:.1f})")
    return text
