"""Chain scores (vgsn.eval.chainscore): the classifier, the cache, the Frechet distance, and
the per-step scores on constructed chains whose answers are known.

The digits classifier is trained once per session (about 10 s) into a temporary cache;
the MNIST one (about 1 minute of training on 2 cores, plus a compile) only when the real
MNIST files are in ../shared/data/mnist. Cache tests use a tiny recipe on the digits.
Every expected number is computed here independently (numpy / scipy), never typed in.
"""
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from vgsn.eval import chainscore as cs
from vgsn.eval import classifier as dc
from vgsn.data.datasets import MNIST_MD5, Dataset, load_dataset

from _paths import SHARED  # noqa: E402
REAL_MNIST = SHARED / 'mnist'
REAL_FACES = SHARED / 'faces'
needs_real_mnist = pytest.mark.skipif(
    not all((REAL_MNIST / (stem + '.gz')).is_file() for stem in MNIST_MD5),
    reason=f"real MNIST IDX files not found in {REAL_MNIST}")
needs_real_faces = pytest.mark.skipif(
    not (REAL_FACES / 'frey_rawface.mat').is_file(),
    reason=f"frey_rawface.mat not found in {REAL_FACES}")

TINY = {'hidden': [32, 32], 'updates': 60}     # cache tests: the digest, not the accuracy


@pytest.fixture(scope='module')
def digits():
    return load_dataset('digits')


@pytest.fixture(scope='module')
def digits_clf(digits, tmp_path_factory):
    clf = cs.scorer_for(digits, cache_dir=tmp_path_factory.mktemp('digits_cache'))
    assert clf.meta['cache']['trained']
    return clf


@pytest.fixture(scope='module')
def mnist():
    return load_dataset('mnist', REAL_MNIST, download=False)


# --------------------------------------------------------------------------- classifier

def test_digits_accuracy(digits, digits_clf):
    acc = digits_clf.accuracy(digits.test, digits.test_labels)
    assert acc >= 0.97, f"digits test accuracy {acc:.4f}"
    assert digits_clf.meta['recipe'] == dc._recipe(None)
    assert digits_clf.feature_dim == dc.RECIPE['hidden'][-1]


def test_inference_matches_numpy(digits, digits_clf):
    X = digits.test[:37]
    h = X.astype(np.float64)
    for w, b in zip(digits_clf.weights[:-1], digits_clf.biases[:-1]):
        h = np.maximum(h @ w + b, 0)
    z = h @ digits_clf.weights[-1] + digits_clf.biases[-1]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(digits_clf.features(X), h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(digits_clf.predict_proba(X), p, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(digits_clf.predict(X), p.argmax(1))
    with pytest.raises(ValueError, match='expects'):
        digits_clf.predict_proba(np.zeros((3, 65), np.float32))


@needs_real_mnist
def test_mnist_accuracy(mnist, tmp_path_factory):
    # data_dir is read-only shared data in CI; the explicit cache_dir keeps the run hermetic.
    clf = cs.scorer_for(mnist, cache_dir=tmp_path_factory.mktemp('mnist_cache'))
    acc = clf.accuracy(mnist.test, mnist.test_labels)
    assert acc >= 0.98, f"MNIST test accuracy {acc:.4f} after {clf.meta['train_seconds']:.0f} s"
    ref = cs.reference(clf, mnist.test)
    assert 0.9 < ref.confidence <= 1.0
    np.testing.assert_allclose(ref.class_freq, np.bincount(mnist.test_labels) / 10000, atol=0.01)


# --------------------------------------------------------------------------- cache

def test_cache_hit_flip_and_corrupt(digits, tmp_path):
    X, y = digits.train.copy(), digits.train_labels
    clf, info = dc.load_or_train('digits', X, y, cache_dir=tmp_path, recipe=TINY)
    assert info['trained'] and info['path'] == tmp_path / 'vgsn-classifier-digits.npz'
    again, info = dc.load_or_train('digits', X, y, cache_dir=tmp_path, recipe=TINY)
    assert not info['trained'] and info['reason'] == 'cache hit'
    for a, b in zip(clf.weights + clf.biases, again.weights + again.biases):
        np.testing.assert_array_equal(a, b)

    # One pixel changed: another digest, so the cache is retrained.
    X[5, 10] = 1.0 - X[5, 10]
    assert dc.data_digest(X, y, TINY) != clf.meta['digest']
    flipped, info = dc.load_or_train('digits', X, y, cache_dir=tmp_path, recipe=TINY)
    assert info['trained'] and 'digest mismatch' in info['reason']
    assert flipped.meta['digest'] == dc.data_digest(X, y, TINY)
    assert dc.DigitClassifier.load(info['path']).meta['digest'] == flipped.meta['digest']
    # A changed recipe or label is another digest too.
    assert dc.data_digest(X, y, dict(TINY, seed=3)) != flipped.meta['digest']
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 10
    assert dc.data_digest(X, y2, TINY) != flipped.meta['digest']

    # A corrupt file is retrained and rewritten, never trusted.
    info['path'].write_bytes(b'not a zip file')
    fixed, info = dc.load_or_train('digits', X, y, cache_dir=tmp_path, recipe=TINY)
    assert info['trained'] and 'corrupt' in info['reason']
    assert dc.DigitClassifier.load(info['path']).meta['digest'] == fixed.meta['digest']
    # ... and so is a file with non-finite weights.
    bad = dc.DigitClassifier([w.copy() for w in fixed.weights], fixed.biases, fixed.meta)
    bad.weights[0][0, 0] = np.nan
    bad.save(info['path'])
    _, info = dc.load_or_train('digits', X, y, cache_dir=tmp_path, recipe=TINY)
    assert info['trained'] and 'non-finite' in info['reason']


def test_cache_folders(digits, tmp_path, monkeypatch):
    monkeypatch.setenv('VGSN_CACHE', str(tmp_path / 'user'))
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    data = tmp_path / 'data'
    assert dc.cache_dirs(data) == [data, tmp_path / 'user', tmp_path / 'xdg' / 'vgsn']
    assert dc.cache_dirs(data, tmp_path / 'c') == [tmp_path / 'c']
    monkeypatch.delenv('VGSN_CACHE')
    assert dc.cache_dirs() == [tmp_path / 'xdg' / 'vgsn']
    # A data folder that cannot be written (here: below a file) falls back to the user cache.
    monkeypatch.setenv('VGSN_CACHE', str(tmp_path / 'user'))
    (tmp_path / 'afile').write_text('x')
    _, info = dc.load_or_train('digits', digits.train, digits.train_labels,
                               data_dir=tmp_path / 'afile' / 'data', recipe=TINY)
    assert info['path'] == tmp_path / 'user' / 'vgsn-classifier-digits.npz'
    # Found there again by the same data; written beside the data when that is writable.
    _, info = dc.load_or_train('digits', digits.train, digits.train_labels, data_dir=data,
                               recipe=TINY)
    assert info['path'] == tmp_path / 'user' / 'vgsn-classifier-digits.npz'
    assert not info['trained']
    _, info = dc.load_or_train('digits', digits.train, digits.train_labels, data_dir=data,
                               recipe=dict(TINY, seed=5))
    assert info['path'] == data / 'vgsn-classifier-digits.npz' and info['trained']
    with pytest.raises(ValueError, match='unknown classifier recipe'):
        dc.data_digest(digits.train, digits.train_labels, {'epochs': 3})


# --------------------------------------------------------------------------- Frechet

def _frechet_scipy(mu1, S1, mu2, S2):
    """The textbook formula with scipy's general matrix square root."""
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(S1) + np.trace(S2)
                 - 2 * np.trace(scipy.linalg.sqrtm(S1 @ S2)).real)


def test_frechet_closed_forms():
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = cs.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), eps=0)
    np.testing.assert_allclose(got, closed, rtol=1e-10)
    # The same Gaussians in a rotated frame: the distance is invariant.
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    got = cs.frechet_distance(Q @ mu1, Q @ np.diag(s1) @ Q.T, Q @ mu2, Q @ np.diag(s2) @ Q.T, eps=0)
    np.testing.assert_allclose(got, closed, rtol=1e-9)
    # Non-commuting covariances: against scipy.linalg.sqrtm.
    A, B = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    S1, S2 = A @ A.T + 0.1 * np.eye(d), B @ B.T + 0.1 * np.eye(d)
    np.testing.assert_allclose(cs.frechet_distance(mu1, S1, mu2, S2, eps=0),
                               _frechet_scipy(mu1, S1, mu2, S2), rtol=1e-8)
    # The ridge moves it by about eps of the traces.
    ridged = cs.frechet_distance(mu1, S1, mu2, S2)
    assert abs(ridged - cs.frechet_distance(mu1, S1, mu2, S2, eps=0)) < 1e-5 * np.trace(S1 + S2)
    with pytest.raises(ValueError, match='mismatched'):
        cs.frechet_distance(mu1, S1, mu2[:3], S2)


def test_frechet_of_features():
    rng = np.random.default_rng(1)
    F = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8)) + 3.0
    trace = np.trace(np.cov(F.T))
    assert cs.frechet_from_features(F, F) <= 1e-6 * trace
    mu, S = cs.gaussian_stats(F)
    np.testing.assert_allclose(mu, F.mean(0))
    np.testing.assert_allclose(S, np.cov(F.T))
    G = rng.normal(size=(300, 8)) * 2.0 + 1.0
    np.testing.assert_allclose(cs.frechet_from_features(F, G, eps=0),
                               _frechet_scipy(*cs.gaussian_stats(F), *cs.gaussian_stats(G)),
                               rtol=1e-8)
    # Monotone in added Gaussian noise.
    noise = rng.normal(size=F.shape)
    dists = [cs.frechet_from_features(F, F + s * noise) for s in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert dists[0] <= 1e-6 * trace and np.all(np.diff(dists) > 0), dists
    # Fewer rows than dimensions: singular covariances, still finite, >= 0, 0 to itself.
    H = rng.normal(size=(5, 30))
    assert cs.frechet_from_features(H, H) <= 1e-6 * np.trace(np.cov(H.T))
    assert np.isfinite(cs.frechet_from_features(H, rng.normal(size=(7, 30))))
    with pytest.raises(ValueError, match='rows >= 2'):
        cs.gaussian_stats(H[:1])


# --------------------------------------------------------------------------- chain scores

def _chain_of(images):
    """(S+1, N, D) from a list of S+1 (N, D) arrays."""
    return np.stack(images).astype(np.float32)


def test_repeated_test_images(digits, digits_clf):
    X = digits.test
    ref = cs.reference(digits_clf, X)
    conf = digits_clf.predict_proba(X).max(1).mean()
    np.testing.assert_allclose(ref.confidence, conf, rtol=1e-6)
    out = cs.chain_scores(digits_clf, _chain_of([X] * 6), ref)
    assert np.isnan(out['switch_rate'][0]) and np.all(out['switch_rate'][1:] == 0)
    np.testing.assert_allclose(out['confidence'], conf, rtol=1e-6)
    np.testing.assert_allclose(out['confidence_test'], conf, rtol=1e-6)
    trace = np.trace(ref.cov)
    assert np.all(out['frechet'] <= 1e-6 * trace), out['frechet']
    np.testing.assert_array_equal(out['first_switch'], 6)
    np.testing.assert_array_equal(out['classes_visited'], 1)
    assert out['never_switched'] == 1.0 and out['switch_rate_mean'] == 0.0
    np.testing.assert_allclose(out['class_freq'][3], np.bincount(digits_clf.predict(X),
                                                                 minlength=10) / len(X))
    assert out['steps'] == 5 and out['chains'] == len(X)


def test_cycling_through_ten_classes(digits, digits_clf):
    pred = digits_clf.predict(digits.test)
    # One test image per class that carries that label and is classified as it.
    one = np.stack([digits.test[np.flatnonzero((digits.test_labels == c) & (pred == c))[0]]
                    for c in range(10)])
    n, steps = 20, 14
    states = _chain_of([one[(np.arange(n) + t) % 10] for t in range(steps + 1)])
    out = cs.chain_scores(digits_clf, states, digits.test)
    np.testing.assert_array_equal(out['switch_rate'][1:], 1.0)
    np.testing.assert_array_equal(out['first_switch'], 1)
    np.testing.assert_array_equal(out['classes_visited'], 10)
    np.testing.assert_array_equal(out['classes'], (np.arange(n)[None] + np.arange(steps + 1)[:, None]) % 10)
    conf = digits_clf.predict_proba(states.reshape(-1, 64)).max(1).reshape(steps + 1, n).mean(1)
    np.testing.assert_allclose(out['confidence'], conf, rtol=1e-6)
    assert out['never_switched'] == 0.0


def test_partial_switches(digits, digits_clf):
    """Chains that switch at known steps: every per-chain number against a plain loop."""
    pred = digits_clf.predict(digits.test)
    a = digits.test[np.flatnonzero(pred == 3)[:1]][0]
    b = digits.test[np.flatnonzero(pred == 7)[:1]][0]
    n, steps = 6, 8
    when = [1, 2, 5, 8, 9, 9]                         # chains 4 and 5 never switch
    states = np.stack([[b if t >= when[i] else a for i in range(n)] for t in range(steps + 1)])
    states[steps, 0] = a                              # chain 0 switches back: two switches
    out = cs.chain_scores(digits_clf, states, digits.test)
    classes = digits_clf.predict(states.reshape(-1, 64)).reshape(steps + 1, n)
    np.testing.assert_array_equal(out['classes'], classes)
    expect_first = [next((t for t in range(1, steps + 1) if classes[t, i] != classes[t - 1, i]),
                         steps + 1) for i in range(n)]
    np.testing.assert_array_equal(out['first_switch'], expect_first)
    assert expect_first == [1, 2, 5, 8, 9, 9]
    np.testing.assert_array_equal(out['classes_visited'], [len(set(classes[:, i])) for i in range(n)])
    np.testing.assert_allclose(out['switch_rate'][1:], (classes[1:] != classes[:-1]).mean(1))
    np.testing.assert_allclose(out['never_switched'], 2 / 6)
    with pytest.raises(ValueError, match='states must be'):
        cs.chain_scores(digits_clf, states[:1], digits.test)


def test_sample_scores_and_noise(digits, digits_clf):
    ref = cs.reference(digits_clf, digits.test)
    real = cs.sample_scores(digits_clf, digits.valid, ref)
    noise = cs.sample_scores(digits_clf, np.random.default_rng(2).random((250, 64)), ref)
    assert noise['frechet'] > 10 * real['frechet'] > 0
    assert real['confidence'] > noise['confidence']
    np.testing.assert_allclose(real['class_freq'].sum(), 1.0)
    F = digits_clf.features(digits.valid)
    np.testing.assert_allclose(real['frechet'],
                               cs.frechet_from_features(F, digits_clf.features(digits.test)),
                               rtol=1e-6)


def test_faces_use_pca(tmp_path):
    rng = np.random.default_rng(3)
    faces = [rng.random((n, 35)).astype(np.float32) for n in (120, 20, 40)]
    ds = Dataset('frey', *faces, (7, 5))
    scorer = cs.scorer_for(ds, cache_dir=tmp_path)
    assert scorer.kind == 'pca' and not scorer.has_classes and scorer.feature_dim == 35
    X = faces[0] - faces[0].mean(0)
    np.testing.assert_allclose(np.abs(scorer.features(faces[2])),
                               np.abs((faces[2] - faces[0].mean(0))
                                      @ np.linalg.svd(X, full_matrices=False)[2].T),
                               rtol=1e-3, atol=1e-4)
    out = cs.chain_scores(scorer, np.stack([faces[2]] * 3), faces[2])
    assert 'frechet_pca' in out and 'frechet' not in out and 'confidence' not in out
    assert np.all(out['frechet_pca'] <= 1e-6 * np.trace(cs.reference(scorer, faces[2]).cov))
    assert list(tmp_path.iterdir()) == []            # PCA is refitted, never cached
    assert cs.PCAScorer(faces[0], n_components=10).feature_dim == 10


@needs_real_faces
def test_frey_chain_of_noise_is_far():
    ds = load_dataset('frey', REAL_FACES)
    scorer = cs.scorer_for(ds)
    rng = np.random.default_rng(4)
    near = np.clip(ds.test + 0.02 * rng.normal(size=ds.test.shape), 0, 1)
    states = np.stack([ds.test, near, rng.random(ds.test.shape)])
    out = cs.chain_scores(scorer, states, ds.test)
    assert out['frechet_pca'][0] < out['frechet_pca'][1] < out['frechet_pca'][2]
    assert scorer.meta['n_components'] == 50 and 0.5 < scorer.explained < 1


# --------------------------------------------------------------------------- diversity

def test_digit_score_and_class_tv_in_closed_form():
    eye = np.eye(10)
    assert cs.digit_score(np.tile(eye, (3, 1))) == pytest.approx(10.0, rel=1e-6)
    assert cs.digit_score(np.tile(eye[4], (30, 1))) == pytest.approx(1.0, rel=1e-6)
    assert cs.digit_score(np.full((30, 10), 0.1)) == pytest.approx(1.0)
    # Two classes, each row p = (0.9, 0.1) or (0.1, 0.9), equally often: the marginal is
    # (0.5, 0.5) and every row's KL to it is 0.9 log 1.8 + 0.1 log 0.2.
    P = np.array([[0.9, 0.1], [0.1, 0.9]] * 5)
    kl = 0.9 * np.log(1.8) + 0.1 * np.log(0.2)
    assert cs.digit_score(P) == pytest.approx(np.exp(kl), rel=1e-9)
    data = np.full(10, 0.1)
    assert cs.class_tv(data, data) == 0.0
    assert cs.class_tv(eye[1], data) == pytest.approx(0.9)
    assert cs.class_tv(eye[1], eye[2]) == pytest.approx(1.0)
    assert cs.class_tv([0.5, 0.5, 0], [0.25, 0.25, 0.5]) == pytest.approx(0.5)


def test_a_collapse_onto_one_digit_fails_the_diversity_scores(digits, digits_clf):
    """Chains that start from test images and fall onto the same clean '1': confident,
    but the class histogram moves away from the data's and the digit score drops."""
    pred = digits_clf.predict(digits.test)
    one = digits.test[np.flatnonzero(pred == 1)[0]]
    X = digits.test[:200]
    n, steps = len(X), 4
    # Step t: the first t * 25% of the chains are the '1' (all of them at the end).
    states = _chain_of([np.where((np.arange(n) < t * n // steps)[:, None], one, X)
                        for t in range(steps + 1)])
    out = cs.chain_scores(digits_clf, states, digits.test)
    ref = cs.reference(digits_clf, digits.test)
    assert out['top_class_final'] == 1 and out['top_class_frac_final'] == 1.0
    np.testing.assert_allclose(out['class_tv_final'], 1.0 - ref.class_freq[1])
    assert out['digit_score_final'] == pytest.approx(1.0, rel=1e-6)
    assert np.isnan(out['confidence_outside_top_final'])
    assert np.all(np.diff(out['class_tv']) > 0) and np.all(np.diff(out['digit_score']) < 0)
    freq0 = np.bincount(pred[:200], minlength=10) / 200
    np.testing.assert_allclose(out['class_tv'][0], cs.class_tv(freq0, ref.class_freq))
    P0 = digits_clf.predict_proba(X)
    np.testing.assert_allclose(out['digit_score'][0], cs.digit_score(P0), rtol=1e-6)
    assert out['digit_score_test'] == pytest.approx(cs.digit_score(digits_clf.predict_proba(
        digits.test)), rel=1e-6)
    # Halfway: the chains not on the top class keep their own confidence.
    half = cs.chain_scores(digits_clf, states[:3], digits.test)
    rest = P0[n // 2:].max(axis=1)
    assert half['top_class_final'] == 1
    np.testing.assert_allclose(half['confidence_outside_top_final'],
                               rest[pred[n // 2:200] != 1].mean(), rtol=1e-6)
    by = half['confidence_by_class']
    assert by.shape == (10,)
    c = int(pred[n // 2 + 1])
    final = np.concatenate([np.full(n // 2, 1), pred[n // 2:200]])
    conf = np.concatenate([np.full(n // 2, digits_clf.predict_proba(one[None]).max()), rest])
    np.testing.assert_allclose(by[c], conf[final == c].mean(), rtol=1e-6)
