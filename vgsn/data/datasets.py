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
file and the fix; its ``missing`` is True when the data are absent (not found,
not downloadable) and False when a file is there but broken. Nothing here
deletes or overwrites a file it did not write.

The shared pieces (:class:`Dataset`, :class:`DatasetError`, the data folder, file
reading) live in :mod:`vgsn.data.files`, the face readers in :mod:`vgsn.data.faces`;
every name is importable from here.

This module is plain numpy / scipy (no symbolic backend), so it imports fast.
"""
import gzip
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

from vgsn.data import safe_pickle
# Re-exported: callers import every dataset name from vgsn.data.datasets.
from vgsn.data.files import (DATA_README, Dataset, DatasetError, find_file,  # noqa: F401
                            md5_hex, read_file, to_unit, resolve_data_dir)
from vgsn.data.faces import (TFD_FOLDS, load_frey,  # noqa: F401
                        load_olivetti, load_tfd, read_tfd, resize_area, tfd_folds, tfd_masks)

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

DIGITS_SEED = 2015


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
    data = read_file(path, fix)
    if md5 is not None and md5_hex(data) != md5:
        raise DatasetError(f"{path}: md5 of the decompressed content is {md5_hex(data)}, expected {md5}. "
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
                       f"or point data_dir / --data-dir / VGSN_DATA at a folder that has it",
                       missing=True)   # nothing on disk: absent, whatever the mirrors did


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
            if md5_hex(data) != md5:
                raise _MirrorFailed(f"md5 of the content is {md5_hex(data)}, expected {md5}")
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
    pkl = find_file(folder, ['mnist.pkl.gz', 'mnist.pkl'])
    idx = {stem: find_file(folder, _mnist_candidates(stem)) for stem in MNIST_MD5}
    if source == 'auto':
        source = 'pkl' if pkl is not None and None in idx.values() else 'idx'
    if source == 'pkl':
        if pkl is None:
            raise DatasetError(f"{folder / 'mnist.pkl.gz'}: file not found. Fix: put the Theano "
                               f"tutorial's mnist.pkl.gz there, or use source='idx'", missing=True)
        return _mnist_from_pickle(pkl)

    missing = [stem for stem, path in idx.items() if path is None]
    if missing and not download:
        raise DatasetError(f"{folder}: MNIST not found (missing {', '.join(missing)}; no mnist.pkl.gz). "
                           f"Fix: put the IDX files or mnist.pkl.gz there (see {DATA_README}), "
                           f"point data_dir / --data-dir / VGSN_DATA at them, or allow download",
                           missing=True)
    for stem in missing:
        idx[stem] = fetch(stem + '.gz', folder, mirrors, md5=MNIST_MD5[stem], progress=progress)

    arrays = {}
    for stem, path in idx.items():
        kind = 'images' if 'images' in stem else 'labels'
        fix = ("delete it and run again to download it afresh, or replace it with a good copy "
               f"(see {DATA_README})")
        data = read_file(path, fix)
        if verify and md5_hex(data) != MNIST_MD5[stem]:
            raise DatasetError(f"{path}: md5 of the decompressed content is {md5_hex(data)}, expected "
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
        parts[prefix] = (to_unit(images.reshape(len(images), 784), ipath, divide_by),
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
    data = read_file(path, fix)
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
        parts.append((to_unit(x, path, divisor=None), y.astype(np.int64)))
    (xtr, ytr), (xva, yva), (xte, yte) = parts
    return Dataset('mnist', xtr, xva, xte, (28, 28), ytr, yva, yte,
                   source=f"MNIST pickle {path}")


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
