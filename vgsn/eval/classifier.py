"""The digit classifier chain scores read digits with: the MLP, its training and its cache.

:class:`DigitClassifier` is a ReLU MLP held as numpy arrays, trained by vgsn's own
backend (:func:`train_classifier`, the fixed :data:`RECIPE`) and cached as an ``.npz``
of weights with the sha256 digest of the data and recipe it was trained on
(:func:`load_or_train`, :func:`cache_dirs`). Inference is plain numpy on those
weights, so scoring compiles nothing; the symbolic backend is imported only to train.
Nothing here prints; files are written only into the cache folder. The scores
themselves are in :mod:`vgsn.eval.chainscore`, which re-exports every name here.
"""
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ['RECIPE', 'CACHE_FORMAT', 'DigitClassifier', 'data_digest', 'train_classifier',
           'cache_dirs', 'load_or_train']

CACHE_FORMAT = 1

#: The classifier recipe: the same for MNIST and the 8x8 digits (a fixed number of
#: updates, not epochs, so the small digits set gets as many steps as MNIST).
#: SGD with the 2015 momentum form (vgsn.model.updates.sgd: m <- b m + (1-b) g, p <- p - lr m),
#: the learning rate decayed linearly to 0 over the updates, He-normal init.
RECIPE = {
    'hidden': [256, 256],
    'batch': 100,
    'updates': 3000,
    'lr': 1.0,
    'momentum': 0.9,
    'max_norm': 10.0,
    'seed': 16,
}

FEATURE_BATCH = 10000      # rows per numpy forward pass (caps the temporaries)


# --------------------------------------------------------------------------- classifier

class DigitClassifier:
    """A ReLU MLP digit classifier held as numpy arrays (inference needs no backend).

    Parameters
    ----------
    weights : list of ndarray (n_in, n_out), float32
        Hidden layers then the softmax layer.
    biases : list of ndarray (n_out,), float32
    meta : dict, optional
        What it was trained on (digest, recipe, accuracy, training time).
    """

    kind = 'classifier'
    has_classes = True
    frechet_key = 'frechet'

    def __init__(self, weights, biases, meta=None):
        if len(weights) != len(biases) or len(weights) < 2:
            raise ValueError(f"need >= 2 layers with one bias each, got {len(weights)} weights "
                             f"and {len(biases)} biases")
        self.weights = [np.ascontiguousarray(w, np.float32) for w in weights]
        self.biases = [np.ascontiguousarray(b, np.float32) for b in biases]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.ndim != 2 or b.shape != (w.shape[1],) or (
                    i and w.shape[0] != self.weights[i - 1].shape[1]):
                raise ValueError(f"layer {i}: weight {w.shape} and bias {b.shape} do not chain")
        self.meta = dict(meta or {})

    @property
    def n_in(self):
        return self.weights[0].shape[0]

    @property
    def n_classes(self):
        return self.weights[-1].shape[1]

    @property
    def feature_dim(self):
        return self.weights[-2].shape[1]

    def _check(self, X):
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_in:
            raise ValueError(f"classifier expects (rows, {self.n_in}) images, got {X.shape}")
        return X

    def _forward(self, X):
        """(features, logits) of float32 (rows, n_in) images, in row batches."""
        X = self._check(X)
        feats, logits = [], []
        for lo in range(0, len(X), FEATURE_BATCH):
            h = X[lo:lo + FEATURE_BATCH]
            for w, b in zip(self.weights[:-1], self.biases[:-1]):
                h = np.maximum(h @ w + b, 0.0)
            feats.append(h)
            logits.append(h @ self.weights[-1] + self.biases[-1])
        if not feats:
            return (np.zeros((0, self.feature_dim), np.float32),
                    np.zeros((0, self.n_classes), np.float32))
        return np.concatenate(feats), np.concatenate(logits)

    def features(self, X):
        """(rows, feature_dim) float32: the last hidden layer's ReLU activations."""
        return self._forward(X)[0]

    def predict_proba(self, X):
        """(rows, n_classes) float32 softmax probabilities."""
        return _softmax(self._forward(X)[1])

    def predict(self, X):
        """(rows,) int64 most probable class."""
        return np.argmax(self._forward(X)[1], axis=1)

    def accuracy(self, X, y):
        """Fraction of rows whose predicted class is ``y``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def features_and_proba(self, X):
        """Both at the cost of one forward pass: ((rows, feature_dim), (rows, n_classes))."""
        f, z = self._forward(X)
        return f, _softmax(z)

    # ---- cache file ------------------------------------------------------
    def save(self, path):
        """Write an ``.npz`` (weights ``W0..``, biases ``b0..``, ``meta`` as JSON) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f'W{i}': w for i, w in enumerate(self.weights)}
        arrays.update({f'b{i}': b for i, b in enumerate(self.biases)})
        arrays['meta'] = np.array(json.dumps(self.meta, sort_keys=True))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.part')
        try:
            with os.fdopen(fd, 'wb') as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`; any defect raises ``ValueError``."""
        try:
            with np.load(path, allow_pickle=False) as z:
                n = sum(1 for k in z.files if k.startswith('W'))
                weights = [z[f'W{i}'] for i in range(n)]
                biases = [z[f'b{i}'] for i in range(n)]
                meta = json.loads(str(z['meta']))
        except Exception as exc:  # zip, key, JSON errors all mean the same: not a good file
            raise ValueError(f"{path}: not a readable classifier cache ({type(exc).__name__}: "
                             f"{exc})") from exc
        if not all(np.isfinite(a).all() for a in weights + biases):
            raise ValueError(f"{path}: classifier cache holds non-finite weights")
        return cls(weights, biases, meta)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _recipe(recipe):
    out = dict(RECIPE)
    if recipe:
        unknown = sorted(set(recipe) - set(RECIPE))
        if unknown:
            raise ValueError(f"unknown classifier recipe key(s) {unknown}; known: {sorted(RECIPE)}")
        out.update(recipe)
    out['hidden'] = [int(h) for h in out['hidden']]
    return out


def _check_labelled(X, y):
    X = np.ascontiguousarray(X, np.float32)
    y = np.ascontiguousarray(y, np.int64)
    if X.ndim != 2 or y.shape != (len(X),) or len(X) == 0:
        raise ValueError(f"need (rows, pixels) images and (rows,) labels, got {X.shape} and {y.shape}")
    if y.min() < 0:
        raise ValueError(f"labels must be >= 0 class indices, got minimum {y.min()}")
    return X, y


def data_digest(X, y, recipe=None):
    """sha256 (hex) of the training images, labels and recipe: the cache's key.

    Any changed pixel, label, shape or recipe value gives another digest.
    """
    X, y = _check_labelled(X, y)
    h = hashlib.sha256()
    h.update(f'vgsn-chainscore-classifier-v{CACHE_FORMAT}'.encode())
    h.update(json.dumps(_recipe(recipe), sort_keys=True).encode())
    h.update(repr((X.shape, str(X.dtype), y.shape, str(y.dtype))).encode())
    h.update(memoryview(X).cast('B'))
    h.update(memoryview(y).cast('B'))
    return h.hexdigest()


def train_classifier(X, y, recipe=None, n_classes=None):
    """Train the recipe's MLP on (X, y) with vgsn's symbolic backend and SGD.

    Parameters
    ----------
    X : ndarray (rows, pixels) float32 in [0, 1]
    y : ndarray (rows,) int class labels
    recipe : dict, optional
        Overrides of :data:`RECIPE`.
    n_classes : int, optional
        Default ``max(y) + 1``.

    Returns
    -------
    DigitClassifier
        ``meta`` has the digest, recipe, training time (s) and training accuracy.
    """
    from vgsn.backend import NAME, T, floatX, function, shared
    from vgsn.model.layers import Dense, relu
    from vgsn.model.updates import sgd

    X, y = _check_labelled(X, y)
    rec = _recipe(recipe)
    k = int(n_classes or y.max() + 1)
    rng = np.random.default_rng(rec['seed'])
    sizes = [X.shape[1]] + rec['hidden'] + [k]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        # He-normal init for the ReLU layers; the softmax layer starts small.
        gain = np.sqrt(2.0 / a) if i < len(sizes) - 2 else 0.1 / np.sqrt(a)
        layers.append(Dense(a, b, f'chainscore.l{i}', W=gain * rng.standard_normal((a, b))))
    params = [p for layer in layers for p in layer.params]

    xs, onehot = T.matrix('x', dtype=floatX), T.matrix('y', dtype=floatX)
    h = xs
    for layer in layers[:-1]:
        h = relu(layer.apply(h))
    z = layers[-1].apply(h)
    z = z - T.max(z, axis=1, keepdims=True)
    logp = z - T.log(T.sum(T.exp(z), axis=1, keepdims=True))
    cost = -T.mean(T.sum(onehot * logp, axis=1))
    lr = shared(np.asarray(rec['lr'], floatX), name='chainscore.lr')
    updates, _ = sgd(cost, params, lr, momentum=float(rec['momentum']), max_norm=rec['max_norm'])
    train_step = function([xs, onehot], cost, updates=updates)

    start = time.perf_counter()
    eye = np.eye(k, dtype=floatX)
    batch, n = int(rec['batch']), len(X)
    order, pos = rng.permutation(n), 0
    for step in range(int(rec['updates'])):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        rows = order[pos:pos + batch]
        pos += batch
        # Linear decay to 0: the last updates average out the SGD noise.
        lr.set_value(np.asarray(rec['lr'] * (1.0 - step / rec['updates']), floatX))
        loss = train_step(X[rows], eye[y[rows]])
    seconds = time.perf_counter() - start
    if not np.isfinite(loss):
        raise ValueError(f"classifier training diverged (final loss {loss}); lower recipe lr "
                         f"{rec['lr']}")
    clf = DigitClassifier([layer.W.get_value() for layer in layers],
                          [layer.b.get_value() for layer in layers])
    clf.meta = {'digest': data_digest(X, y, recipe), 'recipe': rec, 'train_seconds': seconds,
                'train_rows': n, 'backend': NAME, 'train_accuracy': clf.accuracy(X, y),
                'format': CACHE_FORMAT}
    return clf


# --------------------------------------------------------------------------- cache

def cache_dirs(data_dir=None, cache_dir=None):
    """Folders searched for a cached classifier, in order; the first writable one is
    where a new one is written.

    ``cache_dir`` alone when given. Otherwise ``data_dir`` (beside the data, when the
    dataset came from a folder), then ``$VGSN_CACHE``, then ``$XDG_CACHE_HOME/vgsn``
    (default ``~/.cache/vgsn``).
    """
    if cache_dir is not None:
        return [Path(cache_dir).expanduser()]
    dirs = [Path(data_dir).expanduser()] if data_dir is not None else []
    if os.environ.get('VGSN_CACHE'):
        dirs.append(Path(os.environ['VGSN_CACHE']).expanduser())
    xdg = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    dirs.append(Path(xdg).expanduser() / 'vgsn')
    return dirs


def _writable(folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def load_or_train(name, X, y, data_dir=None, cache_dir=None, recipe=None):
    """The cached classifier for this training data, trained (and cached) when missing.

    A cache file ``vgsn-classifier-<name>.npz`` is used only when it loads cleanly and
    its recorded digest equals :func:`data_digest` of ``(X, y, recipe)``; a corrupt or
    mismatched file is retrained and overwritten (where writable), never trusted.

    Returns
    -------
    classifier : DigitClassifier
    info : dict
        ``path`` (the file used or written; None when no folder was writable),
        ``trained`` (bool), ``reason`` (why it was trained, or 'cache hit').
    """
    digest = data_digest(X, y, recipe)
    fname = f'vgsn-classifier-{name}.npz'
    reasons = []
    for folder in cache_dirs(data_dir, cache_dir):
        path = folder / fname
        if not path.is_file():
            continue
        try:
            clf = DigitClassifier.load(path)
        except ValueError as exc:
            reasons.append(f'corrupt cache {path}: {exc}')
            continue
        if clf.meta.get('digest') == digest and clf.n_in == X.shape[1]:
            return clf, {'path': path, 'trained': False, 'reason': 'cache hit'}
        reasons.append(f'digest mismatch in {path}')
    clf = train_classifier(X, y, recipe)
    written = None
    for folder in cache_dirs(data_dir, cache_dir):
        if _writable(folder):
            try:
                clf.save(folder / fname)
                written = folder / fname
                break
            except OSError:
                continue
    return clf, {'path': written, 'trained': True,
                 'reason': '; '.join(reasons) or 'no cache file'}
