"""vgsn's training checkpoints: one HDF5 file of named arrays plus JSON metadata.

``save_run_checkpoint`` / ``load_run_checkpoint``: parameters, momentum and
hyperparameters by name, plus the update counter, config and RNG states as JSON;
written atomically and checked against a checksum on load. ``vgsn.train`` writes and
resumes them. The 2015 author code's pickles are read and written by ``vgsn.orig2015``.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["RUN_FORMAT", "RUN_VERSION", "CheckpointError", "save_run_checkpoint",
           "load_run_checkpoint"]

#: The ``format`` attribute of a run checkpoint, and its layout version.
RUN_FORMAT = "vgsn-run-checkpoint"
RUN_VERSION = 1


class CheckpointError(ValueError):
    """A run checkpoint is missing, cut short, corrupt or not a vgsn checkpoint;
    the message is one line naming the file."""


def _digest(arrays):
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_run_checkpoint(path, arrays, meta):
    """Write a training checkpoint atomically (temporary file, fsync, rename).

    Parameters
    ----------
    path : str or Path
        The checkpoint file (``.h5``). A crash while writing leaves the previous
        file under this name untouched: the new one is written to a temporary
        file in the same folder and renamed over it only when complete.
    arrays : dict str -> ndarray
        Every parameter, momentum and hyperparameter by name; a ``/`` in a name
        makes an HDF5 group (``model/q.h0.W``).
    meta : dict
        JSON-serialisable: update counter, phase, config, RNG states, ...

    Returns
    -------
    Path
    """
    import h5py

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = RUN_FORMAT
            f.attrs["version"] = RUN_VERSION
            f.attrs["meta"] = json.dumps(meta, sort_keys=True)
            f.attrs["sha256"] = _digest(arrays)
            f.attrs["n_arrays"] = len(arrays)
            group = f.create_group("arrays")
            for name, value in arrays.items():
                group.create_dataset(name, data=value)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def load_run_checkpoint(path):
    """Read a checkpoint written by :func:`save_run_checkpoint`.

    Returns
    -------
    arrays : dict str -> ndarray
    meta : dict

    Raises
    ------
    CheckpointError
        One line naming the file: missing, cut short (truncated on disk), not
        HDF5, not a vgsn run checkpoint, or its content does not match the
        checksum written with it.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        size = path.stat().st_size
        reason = "cut short (truncated)" if "truncated" in str(exc) else "not a readable HDF5 file"
        raise CheckpointError(f"{path}: checkpoint is {reason} ({size} bytes on disk); it was "
                              f"not loaded. Fix: resume from an earlier copy or start again") from None
    try:
        with f:
            if f.attrs.get("format") != RUN_FORMAT:
                raise CheckpointError(f"{path}: not a vgsn run checkpoint (format attribute "
                                      f"{f.attrs.get('format')!r})")
            version = int(f.attrs.get("version", -1))
            if version != RUN_VERSION:
                raise CheckpointError(f"{path}: checkpoint layout version {version}, this vgsn "
                                      f"reads version {RUN_VERSION}")
            meta = json.loads(f.attrs["meta"])
            arrays = {}
            f["arrays"].visititems(
                lambda name, obj: arrays.__setitem__(name, obj[()])
                if isinstance(obj, h5py.Dataset) else None)
            expected, n = f.attrs["sha256"], int(f.attrs["n_arrays"])
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint is damaged ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); "
                              f"it was not loaded") from None
    if len(arrays) != n or _digest(arrays) != expected:
        raise CheckpointError(f"{path}: checkpoint content does not match its checksum "
                              f"(corrupt); it was not loaded")
    return arrays, meta

