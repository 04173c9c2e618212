"""Datasets: MNIST and TFD as the paper used them, public face stand-ins, a bundled demo.

One entry point, :func:`load_dataset`, turns a name and options into a
:class:`Dataset` whose ``train`` / ``valid`` / ``test`` are float32 arrays of
shape (rows, pixels) in [0, 1], so the experiment scripts never care where the
pixels came from.

=========  ===========================================  ===============================
name       files (in the data folder)                   split
=========  ===========================================  ===============================
mnist      4 IDX files (.gz or raw) or ``mnist.pkl.gz``  50,000 / 10,000 / 10,000 (paper)
tfd        ``TFD_48x48.mat`` or the 2015 pickled dict    TFD folds, see :func:`tfd_masks`
olivetti   ``olivettifaces.mat``                         by subject: 30 / 5 / 5 people
frey       ``frey_rawface.mat``                          contiguous: 1565 / 200 / 200
digits     none: bundled with vgsn (demo only)           seeded: 1297 / 250 / 250
=========  ===========================================  ===============================

The data folder is ``data_dir`` if given, else ``$VGSN_DATA``, else ``./data``
(relative to the working directory). Only MNIST can be downloaded; the
download tries :data:`MNIST_MIRRORS` in turn, writes to a ``.part`` file,
checks the md5 of the decompressed bytes and only then renames it into place.
Every problem with a file raises :class:`DatasetError`, one line naming the
file and the fix; nothing here deletes or overwrites a file it did not write.

This module is plain numpy / scipy (no symbolic backend), so it imports fast.
"""
import dataclasses
import gzip
import hashlib
import http.client
import inspect
import io
import logging
import os
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from vgsn import safe_pickle

__all__ = [
    'DatasetError', 'Dataset', 'DATASET_NAMES', 'MNIST_MIRRORS', 'MNIST_MD5',
    'resolve_data_dir', 'load_dataset', 'load_mnist', 'load_tfd', 'load_olivetti',
    'load_frey', 'load_digits', 'read_idx', 'read_tfd', 'tfd_masks', 'tfd_folds', 'TFD_FOLDS',
    'fetch', 'resize_area',
]

logger = logging.getLogger(__name__)

#: Base addresses tried in turn for the MNIST IDX files (``<base>/<name>.gz``).
MNIST_MIRRORS = (
    'https://ossci-datasets.s3.amazonaws.com/mnist/',
    'https://storage.googleapis.com/cvdf-datasets/mnist/',
    'http://yann.lecun.com/exdb/mnist/',
)

#: md5 of the *decompressed* content of each canonical MNIST IDX file (the
#: .gz bytes differ between mirrors; the content does not).
MNIST_MD5 = {
    'train-images-idx3-ubyte': '6bbc9ace898e44ae57da46a324031adb',
    'train-labels-idx1-ubyte': 'a25bea736e30d166cdddb491f175f624',
    't10k-images-idx3-ubyte': '2646ac647ad5339dbf082846283269ea',
    't10k-labels-idx1-ubyte': '27ae3e4e09519cfbb04c329615203637',
}

OLIVETTI_URL = 'https://cs.nyu.edu/~roweis/data/olivettifaces.mat'
FREY_URL = 'https://cs.nyu.edu/~roweis/data/frey_rawface.mat'
DIGITS_SEED = 2015
DATA_README = 'data/README.md in the vgsn repository'


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or not what it claims; the message
    names the file and the fix."""


@dataclasses.dataclass(repr=False)
class Dataset:
    """Images split three ways, each (rows, pixels) float32 in [0, 1].

    Attributes
    ----------
    name : str
        The name given to :func:`load_dataset`.
    train, valid, test : ndarray, float32, (rows, pixels)
        Row-major flattened images.
    image_shape : tuple of int
        (height, width); ``height * width == pixels``.
    train_labels, valid_labels, test_labels : ndarray of int64 or None
        Class labels (digit, TFD expression 0-6 with -1 for none, Olivetti
        subject) where the source has them.
    source : str
        Where the arrays came from, in words.
    test_overlaps_train : bool
        True when images of ``test`` (or ``valid``) are also training images (TFD
        with fold 'all': a test image of one fold is a training image of
        another), so test numbers are not held-out numbers.
    note : str
        One line for reports about how the split may be compared ('' if nothing to say).
    """

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_shape: tuple
    train_labels: np.ndarray = None
    valid_labels: np.ndarray = None
    test_labels: np.ndarray = None
    source: str = ''
    test_overlaps_train: bool = False
    note: str = ''

    def __post_init__(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)
        pixels = int(np.prod(self.image_shape))
        for part in ('train', 'valid', 'test'):
            x = getattr(self, part)
            if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != pixels:
                raise DatasetError(f"{self.source or self.name}: {part} is {x.dtype} {x.shape}, "
                                   f"expected float32 (rows, {pixels}); this is a bug in vgsn")
            labels = getattr(self, part + '_labels')
            if labels is not None and len(labels) != len(x):
                raise DatasetError(f"{self.source or self.name}: {len(labels)} {part} labels for "
                                   f"{len(x)} images; this is a bug in vgsn")

    @property
    def n_pixels(self):
        """Pixels per image (columns of ``train``)."""
        return int(np.prod(self.image_shape))

    def __repr__(self):
        h, w = self.image_shape
        return (f"Dataset({self.name!r}, train={len(self.train)}, valid={len(self.valid)}, "
                f"test={len(self.test)}, image={h}x{w}, source={self.source!r})")


def resolve_data_dir(data_dir=None):
    """The data folder: ``data_dir``, else ``$VGSN_DATA``, else ``./data``.

    Returns an absolute :class:`~pathlib.Path`; the folder need not exist (it
    is created only when something is downloaded into it).
    """
    if data_dir is None or str(data_dir) == '':
        data_dir = os.environ.get('VGSN_DATA') or 'data'
    return Path(data_dir).expanduser().absolute()


# --------------------------------------------------------------------------- files

def _read_file(path, fix):
    """The bytes of ``path``, gunzipped if they are gzip (by content, not name)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found. Fix: {fix}")
    data = path.read_bytes()
    if not data:
        raise DatasetError(f"{path}: file is empty (0 bytes). Fix: {fix}")
    if data[:2] == b'\x1f\x8b':
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise DatasetError(f"{path}: truncated or corrupt gzip file ({exc}). Fix: {fix}") from exc
        if not data:
            raise DatasetError(f"{path}: gzip file with empty content. Fix: {fix}")
    return data


def _find(folder, names):
    """The first of ``folder/name`` that exists, or None."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _to_unit(images, path, divisor=255.0):
    """Scale grey levels to float32 in [0, 1] and check the range.

    Integer arrays (and float arrays whose maximum exceeds 1) are divided by
    ``divisor``; float arrays already within [0, 1] are kept as they are.
    ``divisor=None``: the values must already be in [0, 1].
    """
    x = np.asarray(images)
    if x.dtype.kind not in 'uifb':
        raise DatasetError(f"{path}: images are of type {x.dtype}, not numbers. "
                           f"Fix: replace the file with a good copy")
    if divisor is not None and (x.dtype.kind in 'ui' or (x.dtype.kind == 'f' and x.size
                                                          and np.nanmax(x) > 1)):
        y = x.astype(np.float32)
        y /= np.float32(divisor)  # divide, not multiply: bit-equal to the 2015 code's x / 255.
    else:
        y = x.astype(np.float32, copy=True)
    if y.size:
        lo, hi = float(y.min()), float(y.max())
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
            raise DatasetError(f"{path}: pixel values outside [0, 1] after scaling "
                               f"(min {lo:g}, max {hi:g}); expected "
                               f"{f'grey levels 0..{divisor:g}' if divisor else 'values in [0, 1]'}. "
                               f"Fix: replace the file with a good copy")
    return y


def _md5(data):
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- IDX

_IDX_TYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


def _parse_idx(data, path, fix, magic=None):
    head = int.from_bytes(data[:4].ljust(4, b'\0'), 'big')
    if magic is not None and head != magic:
        raise DatasetError(f"{path}: wrong IDX magic number 0x{head:08x}, expected 0x{magic:08x}. "
                           f"Fix: {fix}")
    if len(data) < 4 or data[0] or data[1] or data[2] not in _IDX_TYPES or data[3] == 0:
        raise DatasetError(f"{path}: not an IDX file (magic 0x{head:08x}). Fix: {fix}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: IDX header cut short ({len(data)} bytes). Fix: {fix}")
    dims = struct.unpack(f'>{ndim}I', data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(f"{path}: {len(data)} bytes, but its header {dims} promises {expected} "
                           f"(truncated or corrupt). Fix: {fix}")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder('='))


def read_idx(path, md5=None):
    """Read an IDX file (gzipped or raw) into a numpy array.

    Parameters
    ----------
    path : str or Path
    md5 : str, optional
        Expected md5 of the decompressed bytes; a mismatch raises.

    Returns
    -------
    ndarray
        With the dimensions and type the header gives, in native byte order.
    """
    fix = "replace it with a good copy"
    data = _read_file(path, fix)
    if md5 is not None and _md5(data) != md5:
        raise DatasetError(f"{path}: md5 of the decompressed content is {_md5(data)}, expected {md5}. "
                           f"Fix: {fix}")
    return _parse_idx(data, path, fix)


# --------------------------------------------------------------------------- download

class _MirrorFailed(Exception):
    pass


def fetch(filename, folder, mirrors=MNIST_MIRRORS, *, md5=None, progress=True, timeout=30.0):
    """Download ``filename`` into ``folder`` from the first mirror that serves a good copy.

    Each mirror is tried in turn (``<mirror>/<filename>``). The bytes go to a
    temporary ``<filename>.*.part`` in ``folder``; only a complete transfer
    whose decompressed content has the expected md5 is renamed to
    ``folder/filename`` (``os.replace``, atomic). A failed attempt leaves no
    file behind.

    Parameters
    ----------
    filename : str
    folder : str or Path
        Created if missing.
    mirrors : sequence of str
        Base addresses.
    md5 : str, optional
        md5 of the content after gunzip (of the raw bytes if not gzip).
    progress : bool
        Show a tqdm bar on stderr (when it is a terminal).
    timeout : float
        Seconds to wait on a silent connection.

    Returns
    -------
    Path
        The downloaded file.

    Raises
    ------
    DatasetError
        When ``folder/filename`` already exists (it is never overwritten) or
        no mirror delivered a good copy; the message lists each failure.
    """
    folder = Path(folder)
    dest = folder / filename
    if dest.exists():
        raise DatasetError(f"{dest}: already exists and is never overwritten. "
                           f"Fix: delete it first if you want it downloaded again")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in mirrors:
        url = base.rstrip('/') + '/' + filename
        logger.info("downloading %s", url)
        try:
            _download(url, dest, md5, progress, timeout)
            return dest
        except _MirrorFailed as exc:
            failures.append(f"{url}: {exc}")
            logger.info("%s failed: %s", url, exc)
    if created and not any(folder.iterdir()):
        folder.rmdir()  # leave no trace of a download that never happened
    raise DatasetError(f"{dest}: could not download it ({'; '.join(failures) or 'no mirrors given'}). "
                       f"Fix: fetch {filename} yourself into {folder} (see {DATA_README}), "
                       f"or point data_dir / --data-dir / VGSN_DATA at a folder that has it")


def _download(url, dest, md5, progress, timeout):
    """One attempt: url -> .part -> verified -> dest. Raises _MirrorFailed."""
    from tqdm import tqdm

    fd, part = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + '.', suffix='.part')
    try:
        with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get('Content-Length')
            total = int(length) if length and length.isdigit() else None
            got = 0
            with tqdm(total=total, unit='B', unit_scale=True, desc=dest.name, file=sys.stderr,
                      disable=None if progress else True, leave=False) as bar:
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if total is not None and got != total:
                raise _MirrorFailed(f"transfer interrupted after {got} of {total} bytes")
        if md5 is not None:
            data = Path(part).read_bytes()
            if data[:2] == b'\x1f\x8b':
                try:
                    data = gzip.decompress(data)
                except (EOFError, OSError, zlib.error) as exc:
                    raise _MirrorFailed(f"corrupt gzip ({exc})") from exc
            if _md5(data) != md5:
                raise _MirrorFailed(f"md5 of the content is {_md5(data)}, expected {md5}")
        if dest.exists():  # another process finished first: keep its copy
            return
        os.replace(part, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise _MirrorFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if os.path.exists(part):
            os.remove(part)


# --------------------------------------------------------------------------- MNIST

_MNIST_MAGIC = {'images': 0x00000803, 'labels': 0x00000801}


def _mnist_candidates(stem):
    dotted = stem.replace('-idx', '.idx')  # how some unpackers name them
    return [stem + '.gz', stem, dotted + '.gz', dotted]


def load_mnist(data_dir=None, *, source='auto', download=True, verify=True,
               mirrors=MNIST_MIRRORS, valid_size=10000, divide_by=256.0, progress=True):
    """MNIST with the paper's split: 50,000 train, 10,000 valid, 10,000 test.

    Parameters
    ----------
    data_dir : str or Path, optional
        Folder with the files (see :func:`resolve_data_dir`).
    source : {'auto', 'idx', 'pkl'}
        'idx': the four IDX files (``train-images-idx3-ubyte[.gz]`` etc.);
        'pkl': the Theano tutorial's ``mnist.pkl.gz`` (a Python 2 pickle of
        ``((X, y), (X, y), (X, y))``, read without running code from it);
        'auto': IDX when all four are there, else the pickle when it is there,
        else IDX downloaded.
    download : bool
        Download missing IDX files from ``mirrors`` into the data folder.
    verify : bool
        Check the md5 of each IDX file's decompressed content against
        :data:`MNIST_MD5` (about 0.1 s); a mismatch raises.
    mirrors : sequence of str
        Base addresses for the download.
    valid_size : int
        Validation rows taken from the end of the IDX training set.
    divide_by : float
        IDX grey levels are divided by this. 256 (default) reproduces
        ``mnist.pkl.gz`` exactly: its pixels are k/256, maximum 255/256
        (pylearn2 issue #93); 255 gives the usual k/255.
    progress : bool
        Progress bar while downloading.

    Returns
    -------
    Dataset
        ``image_shape`` (28, 28), digit labels.
    """
    folder = resolve_data_dir(data_dir)
    if source not in ('auto', 'idx', 'pkl'):
        raise DatasetError(f"mnist: unknown source {source!r}. Fix: use 'auto', 'idx' or 'pkl'")
    pkl = _find(folder, ['mnist.pkl.gz', 'mnist.pkl'])
    idx = {stem: _find(folder, _mnist_candidates(stem)) for stem in MNIST_MD5}
    if source == 'auto':
        source = 'pkl' if pkl is not None and None in idx.values() else 'idx'
    if source == 'pkl':
        if pkl is None:
            raise DatasetError(f"{folder / 'mnist.pkl.gz'}: file not found. Fix: put the Theano "
                               f"tutorial's mnist.pkl.gz there, or use source='idx'")
        return _mnist_from_pickle(pkl)

    missing = [stem for stem, path in idx.items() if path is None]
    if missing and not download:
        raise DatasetError(f"{folder}: MNIST not found (missing {', '.join(missing)}; no mnist.pkl.gz). "
                           f"Fix: put the IDX files or mnist.pkl.gz there (see {DATA_README}), "
                           f"point data_dir / --data-dir / VGSN_DATA at them, or allow download")
    for stem in missing:
        idx[stem] = fetch(stem + '.gz', folder, mirrors, md5=MNIST_MD5[stem], progress=progress)

    arrays = {}
    for stem, path in idx.items():
        kind = 'images' if 'images' in stem else 'labels'
        fix = ("delete it and run again to download it afresh, or replace it with a good copy "
               f"(see {DATA_README})")
        data = _read_file(path, fix)
        if verify and _md5(data) != MNIST_MD5[stem]:
            raise DatasetError(f"{path}: md5 of the decompressed content is {_md5(data)}, expected "
                               f"{MNIST_MD5[stem]} (canonical MNIST). Fix: {fix}; or pass verify=False "
                               f"to use a non-canonical file on purpose")
        arrays[stem] = (path, _parse_idx(data, path, fix, magic=_MNIST_MAGIC[kind]))

    parts = {}
    for prefix in ('train', 't10k'):
        (ipath, images), (lpath, labels) = arrays[prefix + '-images-idx3-ubyte'], \
            arrays[prefix + '-labels-idx1-ubyte']
        if images.shape[1:] != (28, 28):
            raise DatasetError(f"{ipath}: images are {images.shape[1:]}, expected 28x28. "
                               f"Fix: replace it with the MNIST file")
        if len(images) != len(labels):
            raise DatasetError(f"{lpath}: {len(labels)} labels for the {len(images)} images in "
                               f"{ipath.name}. Fix: use the two files of the same MNIST release")
        parts[prefix] = (_to_unit(images.reshape(len(images), 784), ipath, divide_by),
                         labels.astype(np.int64))
    (x_all, y_all), (x_test, y_test) = parts['train'], parts['t10k']
    if not 0 < valid_size < len(x_all):
        raise DatasetError(f"{idx['train-images-idx3-ubyte']}: valid_size={valid_size} does not fit "
                           f"{len(x_all)} training images. Fix: choose 0 < valid_size < {len(x_all)}")
    cut = len(x_all) - valid_size
    return Dataset('mnist', x_all[:cut], x_all[cut:], x_test, (28, 28),
                   y_all[:cut], y_all[cut:], y_test, source=f"MNIST IDX files in {folder}")


def _mnist_from_pickle(path):
    fix = f"replace it with the Theano tutorial's mnist.pkl.gz, or use the IDX files (see {DATA_README})"
    data = _read_file(path, fix)
    try:
        obj = safe_pickle.load(io.BytesIO(data), name=str(path))
    except safe_pickle.UnpicklingError as exc:
        raise DatasetError(f"{exc}. Fix: {fix}") from exc
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3
            and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in obj)):
        raise DatasetError(f"{path}: expected ((X, y), (X, y), (X, y)) for train, valid, test; "
                           f"found {type(obj).__name__}. Fix: {fix}")
    parts = []
    for part, (x, y) in zip(('train', 'valid', 'test'), obj):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or x.shape[1] != 784:
            raise DatasetError(f"{path}: {part} images have shape {x.shape}, expected (n, 784). Fix: {fix}")
        if y.shape != (len(x),):
            raise DatasetError(f"{path}: {part} has {len(x)} images but labels of shape {y.shape}. "
                               f"Fix: {fix}")
        parts.append((_to_unit(x, path, divisor=None), y.astype(np.int64)))
    (xtr, ytr), (xva, yva), (xte, yte) = parts
    return Dataset('mnist', xtr, xva, xte, (28, 28), ytr, yva, yte,
                   source=f"MNIST pickle {path}")


# --------------------------------------------------------------------------- .mat / TFD

def _load_mat(path, keys, fix):
    """Read ``keys`` from a MATLAB file (v4-v7 via scipy, v7.3 via h5py)."""
    import scipy.io

    data = _read_file(path, fix)
    try:
        found = scipy.io.loadmat(io.BytesIO(data))
    except NotImplementedError:  # MATLAB v7.3 = HDF5; arrays come back transposed
        found = _load_mat73(path, keys, fix)
    except Exception as exc:  # scipy raises many kinds on garbage
        raise DatasetError(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc}). "
                           f"Fix: {fix}") from exc
    return _require_keys(path, found, keys, fix)


def _load_mat73(path, keys, fix):
    import h5py

    try:
        with h5py.File(path, 'r') as f:
            return {k: np.asarray(f[k]).T for k in keys if k in f}
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable MATLAB v7.3 file ({exc}). Fix: {fix}") from exc


def _require_keys(path, found, keys, fix):
    missing = [k for k in keys if k not in found]
    if missing:
        present = sorted(k for k in found if not str(k).startswith('__'))
        raise DatasetError(f"{path}: no {', '.join(repr(k) for k in missing)} in the file "
                           f"(it has {present or 'none of them'}). Fix: {fix}")
    return {k: np.asarray(found[k]) for k in keys}


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
    data = _read_file(path, fix)
    if data[:6] == b'MATLAB' or path.suffix == '.mat':
        raw = _load_mat(path, TFD_KEYS, fix)
    else:
        try:
            obj = safe_pickle.load(io.BytesIO(data), name=str(path))
        except safe_pickle.UnpicklingError as exc:
            raise DatasetError(f"{exc}. Fix: {fix}") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}: the pickle holds a {type(obj).__name__}, expected a dict. "
                               f"Fix: {fix}")
        obj = {(k.decode('latin1') if isinstance(k, bytes) else k): v for k, v in obj.items()}
        raw = _require_keys(path, obj, TFD_KEYS, fix)
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
#: mean over the folds (``vgsn.evaluation.fold_summary``).
TFD_FOLDS = (0, 1, 2, 3, 4)


def _tfd_path(data_dir, size, path):
    folder = resolve_data_dir(data_dir)
    names = [f'TFD_{size}x{size}.mat', f'tfd_data_{size}x{size}.pkl', f'tfd_data_{size}x{size}.pkl.gz']
    if path is None:
        path = _find(folder, names)
        if path is None:
            raise DatasetError(
                f"{folder / names[0]}: file not found (nor {names[1]}). TFD is not public and cannot "
                f"be downloaded. Fix: if you have it, put {names[0]} there or pass path=...; "
                f"otherwise use the public stand-in 'olivetti' (olivettifaces.mat, resized to "
                f"{size}x{size}) or 'frey' (see {DATA_README})")
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
        sets.append(_to_unit(raw['images'][rows].reshape(len(rows), size * size), path))
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


# --------------------------------------------------------------------------- faces

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
    found = _find(folder, [name])
    if found is None:
        raise DatasetError(f"{folder / name}: file not found. Fix: download {url} into {folder}, "
                           f"or pass path=... (see {DATA_README})")
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
    faces = _load_mat(path, ['faces'], fix)['faces']
    if faces.shape != (4096, 400):
        raise DatasetError(f"{path}: 'faces' has shape {faces.shape}, expected (4096, 400). Fix: {fix}")
    images = _to_unit(faces.T.reshape(400, 64, 64).transpose(0, 2, 1), path)
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
    ff = _load_mat(path, ['ff'], fix)['ff']
    if ff.ndim != 2 or ff.shape[0] != 560 or ff.shape[1] <= 400:
        raise DatasetError(f"{path}: 'ff' has shape {ff.shape}, expected (560, n) with n > 400. "
                           f"Fix: {fix}")
    x = _to_unit(ff.T, path)  # row i = ff[:, i], already row-major 28x20
    n = len(x)
    return Dataset('frey', x[:n - 400], x[n - 400:n - 200], x[n - 200:], (28, 20),
                   source=f"Frey faces {path} (TFD stand-in)")


# --------------------------------------------------------------------------- digits

def load_digits(data_dir=None):
    """scikit-learn's handwritten digits, bundled with vgsn: an offline DEMO.

    1797 8x8 images, grey levels 0..16 scaled by /16, from
    ``sklearn.datasets.load_digits`` (the UCI "Optical Recognition of
    Handwritten Digits" test set, Alpaydin & Kaynak 1998, CC BY 4.0), stored
    in ``vgsn/data/digits.npz`` so nothing is downloaded. Not the paper's data:
    it only lets the pipeline run on a fresh machine. Split: a fixed
    permutation (``RandomState(2015)``), then 1297 train / 250 valid / 250 test.
    ``data_dir`` is ignored.
    """
    from importlib.resources import files

    with np.load(io.BytesIO(files('vgsn').joinpath('data/digits.npz').read_bytes())) as z:
        images, labels = z['images'], z['labels'].astype(np.int64)
    x = images.reshape(len(images), 64).astype(np.float32) / np.float32(16.0)
    order = np.random.RandomState(DIGITS_SEED).permutation(len(x))
    parts = (order[:1297], order[1297:1547], order[1547:])
    return Dataset('digits', *(x[p] for p in parts), (8, 8), *(labels[p] for p in parts),
                   source="bundled scikit-learn digits (demo, not the paper's data)")


# --------------------------------------------------------------------------- entry point

_LOADERS = {
    'mnist': load_mnist,
    'tfd': load_tfd,
    'olivetti': load_olivetti,
    'frey': load_frey,
    'digits': load_digits,
}
DATASET_NAMES = tuple(_LOADERS)


def load_dataset(name, data_dir=None, **options):
    """Load a dataset by name; the one function the experiment scripts call.

    Parameters
    ----------
    name : {'mnist', 'tfd', 'olivetti', 'frey', 'digits'}
    data_dir : str or Path, optional
        Data folder; default ``$VGSN_DATA`` or ``./data``.
    **options
        Passed to the loader (:func:`load_mnist`, :func:`load_tfd`,
        :func:`load_olivetti`, :func:`load_frey`, :func:`load_digits`).

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Unknown name or option, or any problem with the files.
    """
    key = str(name).lower()
    if key not in _LOADERS:
        raise DatasetError(f"unknown dataset {name!r}. Fix: choose one of {', '.join(DATASET_NAMES)}")
    loader = _LOADERS[key]
    accepted = [p for p in inspect.signature(loader).parameters if p != 'data_dir']
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(f"dataset {key!r} has no option {', '.join(unknown)}. "
                           f"Fix: use {', '.join(accepted) or 'no options'}")
    return loader(data_dir, **options)
