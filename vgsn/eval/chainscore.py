"""Chain cleanliness, mixing and Frechet distance: the paper's Fig. 3 measured.

The paper judges its chains by eye: guided chains "continually generate clean samples
while exhibiting rapid mixing between the modes", 1-step VAE chains "degrade". This
module turns those words into numbers, per chain step ``t`` of ``N`` chains
(``states`` of shape (S+1, N, D), as ``run_chain`` returns them; ``states[0]`` is the
start):

- **cleanliness** ``confidence[t]``: mean max-softmax probability a digit classifier
  gives ``x_t``, beside ``confidence_test``, the same number on the test images;
- **local mixing** ``switch_rate[t]``: the fraction of chains whose predicted class
  differs from the one at ``t - 1``; per chain ``classes_visited`` (distinct classes
  over steps 0..S) and ``first_switch`` (the first step whose class differs from the
  previous step's; ``S + 1`` when the chain never switches);
- **sample quality without Parzen** ``frechet[t]``: the Frechet distance between
  Gaussian fits of the classifier's last hidden features of ``{x_t}`` and of the test
  set (an MNIST analogue of FID, Heusel et al. 2017);
- **diversity that a collapse cannot pass** ``class_tv[t]``: the total variation
  distance between the predicted-class histogram of ``{x_t}`` and the test images'
  (0 = the data's class mix, 1 = none of its classes); ``digit_score[t]``: the
  inception-style score exp(mean_i KL(p(y|x_i) || p(y))) (Salimans et al. 2016): 10 for
  ten equally frequent, confidently classified digits, 1 when every state is the same
  digit or no state is classified confidently; ``top_class_frac[t]``: the share of the
  most frequent class. Chains that all fall onto one easy digit are confident (a high
  ``confidence``) but fail these three.

For faces (no digit labels) the features are the projections onto the leading principal
components of the training faces, and the keys say so (``frechet_pca``); there is no
cleanliness or switch score.

The classifier (:class:`DigitClassifier`, in :mod:`vgsn.eval.classifier`) is an MLP
trained by vgsn's own backend (``train_classifier``), cached as an ``.npz`` of weights
with the sha256 digest of the data and recipe it was trained on (:func:`load_or_train`).
Inference is plain numpy on those weights, so scoring compiles nothing. Nothing here
prints; files are written only into the cache folder.

Cost: 1,000 chains x 100 steps at MNIST size score in about 3 s on one core (784-256-256
forward passes and one 256 x 256 symmetric eigenproblem per step). numpy's BLAS threads
fight over a loaded machine: with both cores busy the same call took 45 s until
``OPENBLAS_NUM_THREADS=1`` was set for the process.
"""
from pathlib import Path

import numpy as np

from vgsn.eval.classifier import load_or_train

__all__ = [
    'PCAScorer', 'scorer_for', 'gaussian_stats', 'frechet_distance',
    'frechet_from_features', 'Reference', 'reference', 'sample_scores', 'chain_scores',
    'digit_score', 'class_tv',
]


# --------------------------------------------------------------------------- faces

class PCAScorer:
    """Features for faces: projections on the leading principal components of the
    training images (pixel units, not whitened). Has no classes.

    Parameters
    ----------
    X_train : ndarray (rows, pixels)
    n_components : int
        Capped at ``min(rows - 1, pixels)``.
    """

    kind = 'pca'
    has_classes = False
    frechet_key = 'frechet_pca'

    def __init__(self, X_train, n_components=50):
        X = np.asarray(X_train, np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError(f"PCA needs (rows >= 2, pixels) training images, got {X.shape}")
        k = int(min(n_components, len(X) - 1, X.shape[1]))
        if k < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.mean = X.mean(axis=0)
        _, s, vt = np.linalg.svd(X - self.mean, full_matrices=False)
        self.components = vt[:k].astype(np.float32)        # (k, pixels)
        self.explained = float(np.sum(s[:k] ** 2) / np.sum(s ** 2))
        self.mean = self.mean.astype(np.float32)
        self.meta = {'n_components': k, 'explained_variance': self.explained}

    @property
    def n_in(self):
        return self.components.shape[1]

    @property
    def feature_dim(self):
        return self.components.shape[0]

    def features(self, X):
        """(rows, n_components) float32 projections of ``X - mean``."""
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_in:
            raise ValueError(f"PCA scorer expects (rows, {self.n_in}) images, got {X.shape}")
        return (X - self.mean) @ self.components.T


def scorer_for(dataset, cache_dir=None, data_dir=None, recipe=None, n_components=50):
    """The right scorer for a dataset: the cached digit classifier for 'mnist' and
    'digits', a PCA of the training faces otherwise.

    Parameters
    ----------
    dataset : vgsn.data.datasets.Dataset or str
        A name is loaded with ``load_dataset(name, data_dir)``.
    cache_dir, data_dir : optional
        See :func:`cache_dirs`; ``data_dir`` is where the dataset's files are (for a
        name, resolved as ``load_dataset`` does; for a Dataset, None means the user
        cache). The bundled digits are always cached in the user cache.
    """
    if isinstance(dataset, str):
        from vgsn.data.datasets import load_dataset, resolve_data_dir
        data_dir = resolve_data_dir(data_dir)         # the folder load_dataset reads
        dataset = load_dataset(dataset, data_dir)
    if dataset.name in ('mnist', 'digits'):
        if dataset.train_labels is None:
            raise ValueError(f"dataset {dataset.name!r} has no training labels to train a classifier")
        folder = None if dataset.name == 'digits' else data_dir   # digits live inside the package
        clf, info = load_or_train(dataset.name, dataset.train, dataset.train_labels,
                                  data_dir=folder, cache_dir=cache_dir, recipe=recipe)
        clf.meta['cache'] = {k: str(v) if isinstance(v, Path) else v for k, v in info.items()}
        return clf
    return PCAScorer(dataset.train, n_components)


# --------------------------------------------------------------------------- Frechet

def gaussian_stats(F):
    """Mean (D,) and covariance (D, D), float64, of (rows, D) features (rows >= 2)."""
    F = np.asarray(F, np.float64)
    if F.ndim != 2 or len(F) < 2:
        raise ValueError(f"need (rows >= 2, dims) features for a covariance, got {F.shape}")
    mu = F.mean(axis=0)
    d = F - mu
    return mu, (d.T @ d) / (len(F) - 1)


def _sqrt_psd(S):
    """Symmetric square root of a PSD matrix by eigen-decomposition (eigenvalues < 0
    from rounding clipped to 0)."""
    w, v = np.linalg.eigh((S + S.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product(sqrt1, S2):
    """Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the two matrices are
    similar, and the second is symmetric PSD, so its eigenvalues are real and >= 0
    (clipped there against rounding) and no complex square root is needed."""
    M = sqrt1 @ S2 @ sqrt1
    w = np.linalg.eigvalsh((M + M.T) / 2)
    return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def _ridge(S, eps):
    """eps times the mean variance on the diagonal (0 when eps is 0)."""
    return S + np.eye(len(S)) * (eps * max(np.trace(S) / len(S), 1e-300)) if eps else S


def frechet_distance(mu1, S1, mu2, S2, eps=1e-6):
    """Frechet distance between N(mu1, S1) and N(mu2, S2), in float64:

        ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Computed through eigen-decompositions of symmetric matrices (see
    ``_trace_sqrt_product``), which stays stable when a covariance is singular, as it is
    whenever the features come from fewer rows than dimensions. ``eps`` adds a ridge of
    ``eps`` times each matrix's mean variance to its diagonal (a relative 1e-6 moves the
    distance by about that fraction of the traces); 0 turns it off. Rounding below 0 is
    returned as 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    S1, S2 = _ridge(np.asarray(S1, np.float64), eps), _ridge(np.asarray(S2, np.float64), eps)
    if mu1.shape != mu2.shape or S1.shape != S2.shape or S1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched Gaussians: means {mu1.shape}, {mu2.shape}, "
                         f"covariances {S1.shape}, {S2.shape}")
    d = float(np.sum((mu1 - mu2) ** 2) + np.trace(S1) + np.trace(S2)
              - 2.0 * _trace_sqrt_product(_sqrt_psd(S1), S2))
    return max(d, 0.0)


def frechet_from_features(F1, F2, eps=1e-6):
    """Frechet distance between Gaussian fits of two (rows, D) feature sets."""
    return frechet_distance(*gaussian_stats(F1), *gaussian_stats(F2), eps=eps)


class Reference:
    """What every score compares against, computed once from the test images: the test
    features' mean, covariance (ridged) and its square root, and, for a classifier, the
    test images' mean max-softmax confidence and class frequencies."""

    def __init__(self, scorer, X_test, eps=1e-6):
        X_test = np.asarray(X_test, np.float32)
        if scorer.has_classes:
            F, P = scorer.features_and_proba(X_test)
            self.confidence = float(P.max(axis=1).mean())
            self.class_freq = np.bincount(P.argmax(axis=1), minlength=P.shape[1]) / len(P)
            self.digit_score = digit_score(P)
        else:
            F = scorer.features(X_test)
            self.confidence, self.class_freq, self.digit_score = None, None, None
        self.mu, cov = gaussian_stats(F)
        self.eps = eps
        self.cov = _ridge(cov, eps)
        self.sqrt_cov = _sqrt_psd(self.cov)
        self.rows = len(X_test)

    def frechet(self, F):
        """Frechet distance of (rows, D) features to the test features."""
        mu, cov = gaussian_stats(F)
        cov = _ridge(cov, self.eps)
        d = (np.sum((mu - self.mu) ** 2) + np.trace(cov) + np.trace(self.cov)
             - 2.0 * _trace_sqrt_product(self.sqrt_cov, cov))
        return max(float(d), 0.0)


def digit_score(P):
    """exp(mean_i KL(P_i || mean_i P_i)) of (rows, classes) class probabilities: the
    inception score with a digit classifier. Between 1 (every row the same distribution)
    and the number of classes (confident rows spread evenly over the classes)."""
    P = np.clip(np.asarray(P, np.float64), 1e-12, 1.0)
    P = P / P.sum(axis=1, keepdims=True)
    marginal = P.mean(axis=0)
    kl = np.sum(P * (np.log(P) - np.log(marginal)), axis=1)
    return float(np.exp(kl.mean()))


def class_tv(freq, ref_freq):
    """Total variation distance 0.5 * sum_c |freq_c - ref_freq_c| between two class
    histograms (each sums to 1): 0 for the same mix, 1 for disjoint classes."""
    freq, ref_freq = np.asarray(freq, np.float64), np.asarray(ref_freq, np.float64)
    return float(0.5 * np.abs(freq - ref_freq).sum())


def reference(scorer, X_test, eps=1e-6):
    """A :class:`Reference` for ``scorer`` on the (rows, D) test images."""
    return Reference(scorer, X_test, eps)


def _as_reference(scorer, X_test):
    return X_test if isinstance(X_test, Reference) else Reference(scorer, X_test)


def sample_scores(scorer, X, X_test):
    """Scores of one set of samples (e.g. from the prior), (n >= 2, D).

    ``X_test`` is the test images or a :class:`Reference`. Returns a dict: the
    scorer's ``frechet_key`` ('frechet' or 'frechet_pca') and, for a classifier,
    'confidence', 'confidence_test' and 'class_freq' (n_classes,).
    """
    ref = _as_reference(scorer, X_test)
    X = np.asarray(X, np.float32)
    out = {'rows': len(X)}
    if scorer.has_classes:
        F, P = scorer.features_and_proba(X)
        freq = np.bincount(P.argmax(axis=1), minlength=P.shape[1]) / len(P)
        out.update(confidence=float(P.max(axis=1).mean()), confidence_test=ref.confidence,
                   class_freq=freq, class_tv=class_tv(freq, ref.class_freq),
                   digit_score=digit_score(P), top_class_frac=float(freq.max()))
    else:
        F = scorer.features(X)
    out[scorer.frechet_key] = ref.frechet(F)
    return out


def chain_scores(scorer, states, X_test):
    """Per-step cleanliness, mixing and Frechet scores of N chains of S steps.

    Parameters
    ----------
    scorer : DigitClassifier or PCAScorer (see :func:`scorer_for`)
    states : ndarray (S+1, N, D)
        ``states[0]`` the starts, ``states[t]`` the chains after t steps; N >= 2.
    X_test : ndarray (rows, D) or Reference

    Returns
    -------
    dict
        Per step, arrays of length S+1 indexed by step t: 'step'; the scorer's
        ``frechet_key`` ('frechet' for the classifier, 'frechet_pca' for faces).
        Classifier only: 'confidence'; 'switch_rate' (NaN at t = 0, which has no
        previous step); 'class_freq' (S+1, n_classes) predicted-class frequencies;
        'classes' (S+1, N) predicted classes; 'class_tv' (distance of the class
        histogram to the test images'), 'digit_score', 'top_class' and 'top_class_frac'
        (the most frequent class and its share). Per chain, classifier only:
        'classes_visited' (N,) distinct classes over steps 0..S; 'first_switch' (N,)
        first t >= 1 whose class differs from step t-1's, S+1 when none.
        Summary floats: 'confidence_test', 'confidence_final', 'switch_rate_mean'
        (over steps 1..S), 'classes_visited_mean', 'never_switched' (fraction of
        chains), '<frechet_key>_start', '<frechet_key>_final', '<frechet_key>_mean'
        (over steps 1..S), 'chains', 'steps'; classifier only: 'class_tv_final',
        'class_tv_mean', 'digit_score_final', 'digit_score_mean' (over steps 1..S),
        'digit_score_test', 'top_class_final', 'top_class_frac_final',
        'confidence_outside_top_final' (mean confidence of the final states not in the
        top class; NaN when there are none) and 'confidence_by_class' (n_classes,) the
        final states' mean confidence per predicted class (NaN for an absent class).
        ``frechet[0]`` is the floor at this N when the chains start from test images.
    """
    states = np.asarray(states, np.float32)
    if states.ndim != 3 or states.shape[0] < 2 or states.shape[1] < 2:
        raise ValueError(f"states must be (S+1 >= 2, N >= 2, D), got {states.shape}")
    ref = _as_reference(scorer, X_test)
    n_steps, n = states.shape[0] - 1, states.shape[1]
    key = scorer.frechet_key
    out = {'step': np.arange(n_steps + 1), key: np.zeros(n_steps + 1), 'chains': n,
           'steps': n_steps}
    if scorer.has_classes:
        conf, tv, ds = np.zeros(n_steps + 1), np.zeros(n_steps + 1), np.zeros(n_steps + 1)
        classes = np.zeros((n_steps + 1, n), np.int64)
        freq = np.zeros((n_steps + 1, scorer.n_classes))
    for t in range(n_steps + 1):
        if scorer.has_classes:
            F, P = scorer.features_and_proba(states[t])
            conf[t] = P.max(axis=1).mean()
            classes[t] = P.argmax(axis=1)
            freq[t] = np.bincount(classes[t], minlength=scorer.n_classes) / n
            tv[t] = class_tv(freq[t], ref.class_freq)
            ds[t] = digit_score(P)
            if t == n_steps:
                final_conf = P.max(axis=1)
        else:
            F = scorer.features(states[t])
        out[key][t] = ref.frechet(F)
    out[f'{key}_start'] = float(out[key][0])
    out[f'{key}_final'] = float(out[key][-1])
    out[f'{key}_mean'] = float(out[key][1:].mean())
    if scorer.has_classes:
        changed = classes[1:] != classes[:-1]                         # (S, N)
        switch = np.concatenate([[np.nan], changed.mean(axis=1)])
        first = np.where(changed.any(axis=0), changed.argmax(axis=0) + 1, n_steps + 1)
        visited = 1 + (np.diff(np.sort(classes, axis=0), axis=0) != 0).sum(axis=0)
        top = freq.argmax(axis=1)
        final = classes[-1]
        by_class = np.array([final_conf[final == c].mean() if np.any(final == c) else np.nan
                             for c in range(scorer.n_classes)])
        outside = final != top[-1]
        out.update(class_tv=tv, digit_score=ds, top_class=top, top_class_frac=freq.max(axis=1),
                   class_tv_final=float(tv[-1]), class_tv_mean=float(tv[1:].mean()),
                   digit_score_final=float(ds[-1]), digit_score_mean=float(ds[1:].mean()),
                   digit_score_test=ref.digit_score, top_class_final=int(top[-1]),
                   top_class_frac_final=float(freq[-1].max()),
                   confidence_outside_top_final=(float(final_conf[outside].mean())
                                                 if outside.any() else float('nan')),
                   confidence_by_class=by_class)
        out.update(confidence=conf, switch_rate=switch, class_freq=freq, classes=classes,
                   classes_visited=visited, first_switch=first,
                   confidence_test=ref.confidence, confidence_final=float(conf[-1]),
                   switch_rate_mean=float(np.mean(switch[1:])),
                   classes_visited_mean=float(visited.mean()),
                   never_switched=float(np.mean(first == n_steps + 1)))
    return out
