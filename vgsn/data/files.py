"""What every dataset reader shares: the :class:`Dataset` it returns, the one error
it raises (:class:`DatasetError`), where the data folder is, and reading a file
safely (gunzip by content, grey levels to float32 in [0, 1], MATLAB files).

The readers of each source are :mod:`vgsn.data.datasets` (MNIST, the bundled digits and
:func:`~vgsn.data.datasets.load_dataset`) and :mod:`vgsn.data.faces` (TFD and its public
stand-ins). Plain numpy / scipy (no symbolic backend), so it imports fast.
"""
import dataclasses
import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ['DatasetError', 'Dataset', 'resolve_data_dir', 'DATA_README', 'read_file', 'find_file',
           'to_unit', 'load_mat', 'load_mat73', 'require_keys', 'md5_hex']

DATA_README = 'data/README.md in the vgsn repository'


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or not what it claims; the message
    names the file and the fix.

    Parameters
    ----------
    message : str
        One line: the file, what is wrong, ``Fix: ...``.
    missing : bool
        Whether the data are absent (see the attribute).

    Attributes
    ----------
    missing : bool
        True when the data are not there at all: no file where they were looked
        for (and, where a download was allowed, none could be fetched). False
        when a file is there but empty, truncated, corrupt or of the wrong shape,
        and for a bad name or option. The demo presets fall back to a stand-in
        dataset only when it is True (``vgsn.run.data.load_data``): a broken file
        must be said, never papered over.
    """

    def __init__(self, message, *, missing=False):
        super().__init__(message)
        # Kept in __dict__, so a pickled error (a sweep's worker) keeps it too.
        self.missing = bool(missing)


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
    folder = Path(data_dir).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"{folder}: is a file, not a folder. Fix: point --data-dir / "
                           f"VGSN_DATA / data_dir at the folder that holds the data files")
    return folder


# --------------------------------------------------------------------------- files

def read_file(path, fix):
    """The bytes of ``path``, gunzipped if they are gzip (by content, not name)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found. Fix: {fix}", missing=True)
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


def find_file(folder, names):
    """The first of ``folder/name`` that exists, or None."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def to_unit(images, path, divisor=255.0):
    """Scale grey levels to float32 in [0, 1] and check the range.

    Integer arrays (and float arrays whose maximum exceeds 1) are divided by
    ``divisor``; float arrays already within [0, 1] are kept as they are.
    ``divisor=None``: the values must already be in [0, 1].
    """
    x = np.asarray(images)
    if x.dtype.kind not in 'uifb':
        raise DatasetError(f"{path}: images are of type {x.dtype}, not numbers. "
                           f"Fix: replace the file with a good copy")
    if x.dtype.kind == 'f' and not np.all(np.isfinite(x)):   # before any max: no warnings
        raise DatasetError(f"{path}: {int(np.sum(~np.isfinite(x))):,} of its {x.size:,} pixel "
                           f"values are NaN or infinite. Fix: replace the file with a good copy")
    if divisor is not None and (x.dtype.kind in 'ui' or (x.dtype.kind == 'f' and x.size
                                                          and x.max() > 1)):
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


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- .mat

def load_mat(path, keys, fix):
    """Read ``keys`` from a MATLAB file (v4-v7 via scipy, v7.3 via h5py)."""
    import scipy.io

    data = read_file(path, fix)
    try:
        found = scipy.io.loadmat(io.BytesIO(data))
    except NotImplementedError:  # MATLAB v7.3 = HDF5; arrays come back transposed
        found = load_mat73(path, keys, fix)
    except Exception as exc:  # scipy raises many kinds on garbage
        raise DatasetError(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc}). "
                           f"Fix: {fix}") from exc
    return require_keys(path, found, keys, fix)


def load_mat73(path, keys, fix):
    import h5py

    try:
        with h5py.File(path, 'r') as f:
            return {k: np.asarray(f[k]).T for k in keys if k in f}
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable MATLAB v7.3 file ({exc}). Fix: {fix}") from exc


def require_keys(path, found, keys, fix):
    missing = [k for k in keys if k not in found]
    if missing:
        present = sorted(k for k in found if not str(k).startswith('__'))
        raise DatasetError(f"{path}: no {', '.join(repr(k) for k in missing)} in the file "
                           f"(it has {present or 'none of them'}). Fix: {fix}")
    return {k: np.asarray(found[k]) for k in keys}
