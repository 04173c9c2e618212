"""vgsn's training checkpoints: one HDF5 file of named arrays plus JSON metadata.

``save_run_checkpoint`` / ``load_run_checkpoint``: parameters, momentum and
hyperparameters by name, plus the update counter, config and RNG states as JSON.
``vgsn.run.train`` writes and resumes them. The 2015 author code's pickles are read and
written by ``vgsn.compat2015.convert``.

Layout (version 2)
------------------
A 512-byte HDF5 *user block* (HDF5 ignores it, so ``h5py`` and ``h5dump`` read the
file as usual) holds a text header::

    vgsn-run-checkpoint 2
    bytes <length of the HDF5 image that follows>
    sha256 <digest of those bytes>

The digest covers every byte after the header: arrays, metadata (config, RNG
states, metrics sizes, update, data digest), attributes and the HDF5 structure
itself. A load checks it before any byte reaches HDF5, so a flipped bit anywhere,
a file cut short or a foreign file is a :class:`CheckpointError` of one line, never
a run that silently diverges or an HDF5 library error.

Writing never lets HDF5 touch the disk: the file is built in memory (h5py's
``core`` driver without a backing store), then its bytes are written to a
temporary file in the same folder, fsynced and renamed over the old checkpoint.
A full disk or a read-only folder is then an ordinary ``OSError`` of a plain
``write`` (HDF5 under ENOSPC can crash the process), reported as
:class:`CheckpointWriteError`; the previous checkpoint stays as it was.
Version 1 files (no header, only the arrays checksummed) still load.
"""
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["RUN_FORMAT", "RUN_VERSION", "CheckpointError", "CheckpointWriteError",
           "save_run_checkpoint", "load_run_checkpoint"]

#: The ``format`` attribute of a run checkpoint, and its layout version.
RUN_FORMAT = "vgsn-run-checkpoint"
RUN_VERSION = 2
_HEADER_SIZE = 512          # the HDF5 user block: a power of two >= 512
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class CheckpointError(ValueError):
    """A run checkpoint is missing, cut short, corrupt or not a vgsn checkpoint;
    the message is one line naming the file."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, read-only folder, ...); the
    previous file under its name is unchanged. ``errno`` is the system's code."""

    def __init__(self, message, errno=None):
        super().__init__(message)
        self.errno = errno


def _digest(arrays, meta_text=""):
    """sha256 over names, dtypes, shapes and bytes in name order, then the metadata."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    h.update(meta_text.encode())
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


def _hdf5_image(arrays, meta_text):
    """The bytes of the HDF5 file (user block left as zeros), built in memory."""
    import h5py

    with h5py.File(f"vgsn-checkpoint-{id(arrays)}.h5", "w", driver="core",
                   backing_store=False, userblock_size=_HEADER_SIZE) as f:
        f.attrs["format"] = RUN_FORMAT
        f.attrs["version"] = RUN_VERSION
        f.attrs["meta"] = meta_text
        f.attrs["sha256"] = _digest(arrays, meta_text)
        f.attrs["n_arrays"] = len(arrays)
        group = f.create_group("arrays")
        for name, value in arrays.items():
            group.create_dataset(name, data=value)
        f.flush()
        return f.id.get_file_image()


def _header(image):
    text = (f"{RUN_FORMAT} {RUN_VERSION}\nbytes {len(image)}\n"
            f"sha256 {hashlib.sha256(image).hexdigest()}\n").encode()
    return text.ljust(_HEADER_SIZE, b"\0")


def _write_all(fd, data):
    """``os.write`` until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def save_run_checkpoint(path, arrays, meta):
    """Write a training checkpoint atomically (temporary file, fsync, rename).

    Parameters
    ----------
    path : str or Path
        The checkpoint file (``.h5``). A crash or a failed write leaves the
        previous file under this name untouched: the new one is written to a
        temporary file in the same folder and renamed over it only when complete.
    arrays : dict str -> ndarray
        Every parameter, momentum and hyperparameter by name; a ``/`` in a name
        makes an HDF5 group (``model/q.h0.W``).
    meta : dict
        JSON-serialisable: update counter, phase, config, RNG states, ...

    Returns
    -------
    Path

    Raises
    ------
    CheckpointWriteError
        One line naming the file and the system's reason (no space left, read-only
        file system, permission denied); nothing is left behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
    meta_text = json.dumps(meta, sort_keys=True)
    fd = None
    try:
        image = _hdf5_image(arrays, meta_text)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _write_all(fd, _header(image))
        _write_all(fd, image)
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException as exc:
        if fd is not None:
            os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise CheckpointWriteError(
                f"{path}: cannot write the checkpoint ({reason}); the previous "
                f"{path.name}, if any, is unchanged", exc.errno) from None
        raise
    _fsync_dir(path.parent)
    return path


def _damaged(path, what):
    return CheckpointError(f"{path}: checkpoint is {what}; it was not loaded. Fix: resume from "
                           f"an earlier copy or start again")


def _open_hdf5(path, data):
    import h5py

    try:
        return h5py.File(io.BytesIO(data), "r")
    except Exception as exc:   # HDF5 raises OSError, RuntimeError, ... on garbage
        cut = "truncated" in str(exc)
        raise _damaged(path, f"{'cut short (truncated)' if cut else 'not a readable HDF5 file'}"
                             f" ({len(data)} bytes on disk)") from None


def _check_header(path, data):
    """The HDF5 image behind a version-2 header, its length and digest checked."""
    head = data[:_HEADER_SIZE].rstrip(b"\0")
    try:
        lines = head.decode("ascii").splitlines()
        name, version = lines[0].split(" ")
        fields = dict(line.split(" ", 1) for line in lines[1:])
        n, digest = int(fields["bytes"]), fields["sha256"]
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        raise _damaged(path, "damaged (its header is unreadable)") from None
    if int(version) != RUN_VERSION:
        raise CheckpointError(f"{path}: checkpoint layout version {version}, this vgsn reads "
                              f"versions 1 and {RUN_VERSION}")
    image = data[_HEADER_SIZE:]
    if len(image) < n:
        raise _damaged(path, f"cut short (truncated: {len(data)} bytes on disk, "
                             f"{n + _HEADER_SIZE} written)")
    if len(image) > n or hashlib.sha256(image).hexdigest() != digest:
        raise CheckpointError(f"{path}: checkpoint content does not match its checksum "
                              f"(corrupt); it was not loaded")
    return data


def load_run_checkpoint(path):
    """Read a checkpoint written by :func:`save_run_checkpoint`.

    Returns
    -------
    arrays : dict str -> ndarray
    meta : dict

    Raises
    ------
    CheckpointError
        One line naming the file: missing, unreadable, cut short (truncated on
        disk), not HDF5, not a vgsn run checkpoint, or its bytes do not match the
        checksum written with them.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint "
                              f"({exc.strerror or exc})") from None
    if data.startswith(RUN_FORMAT.encode() + b" "):
        data = _check_header(path, data)
    elif not data.startswith(_HDF5_SIGNATURE):     # a version-1 file starts with HDF5's
        what = "empty (0 bytes)" if not data else "cut short" if len(data) < 8 else None
        if what:
            raise _damaged(path, what)
        raise CheckpointError(f"{path}: not a vgsn run checkpoint (no vgsn header, not HDF5); "
                              f"it was not loaded")
    f = _open_hdf5(path, data)
    try:
        with f:
            if f.attrs.get("format") != RUN_FORMAT:
                raise CheckpointError(f"{path}: not a vgsn run checkpoint (format attribute "
                                      f"{f.attrs.get('format')!r})")
            version = int(f.attrs.get("version", -1))
            if version not in (1, RUN_VERSION):
                raise CheckpointError(f"{path}: checkpoint layout version {version}, this vgsn "
                                      f"reads versions 1 and {RUN_VERSION}")
            meta_text = f.attrs["meta"]
            meta_text = meta_text.decode() if isinstance(meta_text, bytes) else str(meta_text)
            meta = json.loads(meta_text)
            arrays = {}
            f["arrays"].visititems(
                lambda name, obj: arrays.__setitem__(name, obj[()])
                if hasattr(obj, "dtype") else None)
            expected, n = str(f.attrs["sha256"]), int(f.attrs["n_arrays"])
    except CheckpointError:
        raise
    except Exception as exc:      # HDF5 / JSON errors of a damaged version-1 file
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise _damaged(path, f"damaged ({type(exc).__name__}: {first})") from None
    if len(arrays) != n or _digest(arrays, meta_text if version > 1 else "") != expected:
        raise CheckpointError(f"{path}: checkpoint content does not match its checksum "
                              f"(corrupt); it was not loaded")
    if not isinstance(meta, dict):
        raise _damaged(path, "damaged (its metadata is not a mapping)")
    return arrays, meta
