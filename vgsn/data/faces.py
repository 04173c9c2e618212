"""TFD as the paper used it, and its public stand-ins (Olivetti, Frey faces).

Readers called through :func:`vgsn.data.datasets.load_dataset` (``'tfd'``,
``'olivetti'``, ``'frey'``); each returns a :class:`~vgsn.data.files.Dataset`
and raises :class:`~vgsn.data.files.DatasetError` naming the file and the fix.
Plain numpy / scipy (no symbolic backend).
"""
import io
from pathlib import Path

import numpy as np

from vgsn.data import safe_pickle
from vgsn.data.files import (DATA_README, Dataset, DatasetError, find_file, load_mat, read_file,
                            require_keys, to_unit, resolve_data_dir)

__all__ = ['load_tfd', 'read_tfd', 'tfd_masks', 'tfd_folds', 'TFD_FOLDS', 'TFD_KEYS',
           'load_olivetti', 'load_frey', 'resize_area', 'OLIVETTI_URL', 'FREY_URL']

OLIVETTI_URL = 'https://cs.nyu.edu/~roweis/data/olivettifaces.mat'
FREY_URL = 'https://cs.nyu.edu/~roweis/data/frey_rawface.mat'


# --------------------------------------------------------------------------- TFD

TFD_KEYS = ('images', 'folds', 'labs_ex', 'labs_id')


def read_tfd(path, size=48):
    """Read and check a TFD file: ``TFD_48x48.mat`` or the 2015 code's pickled dict.

    Parameters
    ----------
    path : str or Path
        A MATLAB file, or a (gzipped) pickle of a dict with the same keys,
        read without running code from it.
    size : int
        Expected image side.

    Returns
    -------
    dict
        ``images`` (n, size, size) as stored, ``folds`` (n, k) int with
        0 unlabeled / 1 train / 2 valid / 3 test per fold, ``labs_ex``
        (expression 1..7, -1 where missing) and ``labs_id`` (identity), both (n,).
    """
    path = Path(path)
    fix = f"use TFD_{size}x{size}.mat as distributed (keys {', '.join(TFD_KEYS)}), or the 2015 code's pickle"
    data = read_file(path, fix)
    if data[:6] == b'MATLAB' or path.suffix == '.mat':
        raw = load_mat(path, TFD_KEYS, fix)
    else:
        try:
            obj = safe_pickle.load(io.BytesIO(data), name=str(path))
        except safe_pickle.UnpicklingError as exc:
            raise DatasetError(f"{exc}. Fix: {fix}") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}: the pickle holds a {type(obj).__name__}, expected a dict. "
                               f"Fix: {fix}")
        obj = {(k.decode('latin1') if isinstance(k, bytes) else k): v for k, v in obj.items()}
        raw = require_keys(path, obj, TFD_KEYS, fix)
    images, folds = raw['images'], raw['folds']
    if images.ndim != 3 or images.shape[1:] != (size, size):
        raise DatasetError(f"{path}: 'images' has shape {images.shape}, expected (n, {size}, {size}). "
                           f"Fix: {fix}")
    n = len(images)
    if folds.ndim != 2 or len(folds) != n or not np.isin(folds, (0, 1, 2, 3)).all():
        raise DatasetError(f"{path}: 'folds' must be ({n}, k) with values 0-3; it is {folds.shape}. "
                           f"Fix: {fix}")
    out = {'images': images, 'folds': folds.astype(np.int64)}
    for key in ('labs_ex', 'labs_id'):
        labels = raw[key].reshape(-1) if raw[key].size == n else None
        if labels is None:
            raise DatasetError(f"{path}: '{key}' has {raw[key].size} entries for {n} images. Fix: {fix}")
        out[key] = labels.astype(np.int64)
    return out


def tfd_masks(folds, fold='all'):
    """Which rows of a TFD file belong to which set.

    Parameters
    ----------
    folds : ndarray (n, k)
        0 unlabeled / 1 train / 2 valid / 3 test, one column per fold.
    fold : int or 'all'
        One fold's column, or 'all' (the 2015 code): a row belongs to a set
        when ANY fold puts it there. Labelled images rotate between train,
        valid and test across folds, so with 'all' valid and test overlap
        train; use fold 0-4 for disjoint sets.

    Returns
    -------
    dict of str -> bool ndarray (n,)
        Keys 'unlabeled', 'train', 'valid', 'test'.
    """
    folds = np.asarray(folds)
    if isinstance(fold, str) and fold.isdigit():  # from a command line
        fold = int(fold)
    if isinstance(fold, str) and fold == 'all':
        cols = folds
    elif isinstance(fold, (int, np.integer)) and not isinstance(fold, bool) \
            and 0 <= fold < folds.shape[1]:
        cols = folds[:, [fold]]
    else:
        raise DatasetError(f"TFD: fold={fold!r} is not a fold. "
                           f"Fix: use 0..{folds.shape[1] - 1} or 'all'")
    return {name: (cols == code).any(axis=1)
            for code, name in enumerate(('unlabeled', 'train', 'valid', 'test'))}


#: The folds of TFD_48x48.mat: the GAN paper's held-out protocol trains, picks
#: sigma and tests on fold k's own train / valid / test, k = 0..4, and reports the
#: mean over the folds (``vgsn.eval.bound.fold_summary``).
TFD_FOLDS = (0, 1, 2, 3, 4)


def _tfd_path(data_dir, size, path):
    folder = resolve_data_dir(data_dir)
    names = [f'TFD_{size}x{size}.mat', f'tfd_data_{size}x{size}.pkl', f'tfd_data_{size}x{size}.pkl.gz']
    if path is None:
        path = find_file(folder, names)
        if path is None:
            raise DatasetError(
                f"{folder / names[0]}: file not found (nor {names[1]}). TFD is not public and cannot "
                f"be downloaded. Fix: if you have it, put {names[0]} there or pass path=...; "
                f"otherwise use the public stand-in 'olivetti' (olivettifaces.mat, resized to "
                f"{size}x{size}) or 'frey' (see {DATA_README})", missing=True)
    return Path(path)


def tfd_folds(data_dir=None, *, size=48, path=None):
    """The folds a TFD file holds, for the held-out per-fold protocol.

    Each is a ``fold=`` value for :func:`load_tfd` / ``load_dataset('tfd', fold=k)``
    whose train, valid and test sets are disjoint. Train one model per fold,
    choose sigma on its valid set, score its test set, and report the mean over
    folds (Goodfellow et al. 2014, whose TFD number is that mean): the comparable
    TFD number. Fold 'all' (the 2015 code) is not held out.

    Returns
    -------
    list of int
        ``0 .. k-1`` for the file's ``folds`` array of shape (n, k) (5 for TFD).
    """
    raw = read_tfd(_tfd_path(data_dir, size, path), size)
    return list(range(raw['folds'].shape[1]))


def load_tfd(data_dir=None, *, fold='all', size=48, path=None, unlabeled=True):
    """The Toronto Face Database as the 2015 code used it.

    ``train`` is unlabeled + train images, ``valid`` and ``test`` the valid and
    test images, chosen by :func:`tfd_masks`; pixels /255; all-zero images
    (some unlabeled faces are blank) are dropped from every set.

    Parameters
    ----------
    data_dir : str or Path, optional
        Folder holding ``TFD_{size}x{size}.mat`` or ``tfd_data_{size}x{size}.pkl``.
    fold : int or 'all'
        See :func:`tfd_masks`; 'all' (default) is what the 2015 code ran, and
        its valid / test images are training images of other folds
        (``test_overlaps_train`` and ``note`` of the result say so). Held out:
        ``fold=k`` for each k of :func:`tfd_folds`, averaged over folds.
    size : int
        48 (the paper) or 96 (the other TFD release).
    path : str or Path, optional
        The file itself, overriding the search.
    unlabeled : bool
        Include the unlabeled images in ``train`` (the 2015 code did).

    Returns
    -------
    Dataset
        Labels are expression 0-6, -1 where unknown; ``test_overlaps_train``
        is True when a valid or test image is also in ``train``.
    """
    path = _tfd_path(data_dir, size, path)
    raw = read_tfd(path, size)
    masks = tfd_masks(raw['folds'], fold)
    nonblank = raw['images'].reshape(len(raw['images']), -1).any(axis=1)
    expression = np.where(raw['labs_ex'] > 0, raw['labs_ex'] - 1, -1)
    train_mask = masks['train'] | (masks['unlabeled'] if unlabeled else False)
    sets = []
    for mask in (train_mask, masks['valid'], masks['test']):
        rows = np.flatnonzero(mask & nonblank)
        sets.append(to_unit(raw['images'][rows].reshape(len(rows), size * size), path))
        sets.append(expression[rows])
    (xtr, ytr, xva, yva, xte, yte) = sets
    # The same image (file row) in train and in valid / test: with fold 'all' a
    # test image of one fold is a training image of the others.
    shared = {part: int((train_mask & masks[part] & nonblank).sum()) for part in ('valid', 'test')}
    overlap = shared['valid'] > 0 or shared['test'] > 0
    note = ''
    if overlap:
        note = (f"TFD fold {fold!r}: {shared['test']:,} of {len(xte):,} test and "
                f"{shared['valid']:,} of {len(xva):,} valid images are also training images "
                f"(of another fold), so test numbers are not held out; the comparable TFD "
                f"number is the mean over fold=0..4 (datasets.tfd_folds)")
    return Dataset('tfd', xtr, xva, xte, (size, size), ytr, yva, yte,
                   source=f"TFD {path}, fold {fold}", test_overlaps_train=overlap, note=note)


# --------------------------------------------------------------------------- stand-ins

def resize_area(images, shape):
    """Resize (n, h, w) images to (n, H, W) by area averaging.

    Each output pixel is the mean of the input area it covers (fractional
    overlaps weighted), so values stay within the input range. Works for any
    ratio, up or down.
    """
    images = np.asarray(images, dtype=np.float32)
    rows = _area_weights(shape[0], images.shape[1])
    cols = _area_weights(shape[1], images.shape[2])
    out = rows @ images @ cols.T
    if images.size:  # matmul rounding may step a hair outside the input range
        np.clip(out, images.min(), images.max(), out=out)
    return out


def _area_weights(n_out, n_in):
    """(n_out, n_in) matrix: output cell i averages input cells by overlap."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    cells = np.arange(n_in + 1)
    overlap = np.minimum(edges[1:, None], cells[None, 1:]) - np.maximum(edges[:-1, None], cells[None, :-1])
    weights = np.clip(overlap, 0.0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _face_file(data_dir, path, name, url):
    if path is not None:
        return Path(path)
    folder = resolve_data_dir(data_dir)
    found = find_file(folder, [name])
    if found is None:
        raise DatasetError(f"{folder / name}: file not found. Fix: download {url} into {folder}, "
                           f"or pass path=... (see {DATA_README})", missing=True)
    return found


def load_olivetti(data_dir=None, *, path=None, size=48):
    """Olivetti / AT&T faces (public stand-in for TFD), split by person.

    ``olivettifaces.mat`` (key ``faces``, (4096, 400), image i is
    ``faces[:, i].reshape(64, 64).T``) holds 10 images of each of 40 people,
    in order. Split: people 0-29 train (300 images), 30-34 valid (50), 35-39
    test (50), so no test face was seen in training. Labels are the person.

    Parameters
    ----------
    data_dir : str or Path, optional
    path : str or Path, optional
        The .mat file itself.
    size : int or None
        Side after area resizing; 48 (default) matches TFD, None keeps 64.
    """
    path = _face_file(data_dir, path, 'olivettifaces.mat', OLIVETTI_URL)
    fix = f"use the original olivettifaces.mat from {OLIVETTI_URL}"
    faces = load_mat(path, ['faces'], fix)['faces']
    if faces.shape != (4096, 400):
        raise DatasetError(f"{path}: 'faces' has shape {faces.shape}, expected (4096, 400). Fix: {fix}")
    images = to_unit(faces.T.reshape(400, 64, 64).transpose(0, 2, 1), path)
    side = 64 if size is None else int(size)
    if side != 64:
        images = resize_area(images, (side, side))
    x = images.reshape(400, side * side)
    person = np.arange(400) // 10
    split = [person < 30, (person >= 30) & (person < 35), person >= 35]
    return Dataset('olivetti', *(x[m] for m in split), (side, side), *(person[m] for m in split),
                   source=f"Olivetti faces {path} (TFD stand-in)")


def load_frey(data_dir=None, *, path=None):
    """Brendan Frey's face sequence (public stand-in for TFD), 28x20.

    ``frey_rawface.mat`` (key ``ff``, (560, n), image i is
    ``ff[:, i].reshape(28, 20)``) holds 1965 frames of one video. Split in
    contiguous blocks, so neighbouring frames do not straddle sets: the last
    200 frames test, the 200 before valid, the rest (1565) train. No labels.
    """
    path = _face_file(data_dir, path, 'frey_rawface.mat', FREY_URL)
    fix = f"use the original frey_rawface.mat from {FREY_URL}"
    ff = load_mat(path, ['ff'], fix)['ff']
    if ff.ndim != 2 or ff.shape[0] != 560 or ff.shape[1] <= 400:
        raise DatasetError(f"{path}: 'ff' has shape {ff.shape}, expected (560, n) with n > 400. "
                           f"Fix: {fix}")
    x = to_unit(ff.T, path)  # row i = ff[:, i], already row-major 28x20
    n = len(x)
    return Dataset('frey', x[:n - 400], x[n - 400:n - 200], x[n - 200:], (28, 20),
                   source=f"Frey faces {path} (TFD stand-in)")
