"""The run's data: loaded with the fallback rules of the demo presets, and its
content digest (a checkpoint records it; resuming on other data refuses)."""
import hashlib
import sys

import numpy as np

from vgsn.data.datasets import DatasetError, load_dataset, resolve_data_dir
from vgsn.run.folder import BadInput, TrainingError

__all__ = ["load_data", "data_digest"]


def load_data(config, data_dir=None):
    """Load the config's dataset, falling back as the demo presets allow: only when
    the data are absent, never when a file is there but broken (that is said), and
    never for a dataset named on the command line (``vgsn.run.cli`` clears the fallback).

    Returns
    -------
    data : vgsn.data.datasets.Dataset
    note : str or None
        Why a fallback was used ("mnist not found in <folder>"), said to the user
        and written in the report.

    Raises
    ------
    TrainingError
        The dataset is missing and no fallback applies (the message says where
        it was looked for and what the alternatives are), or it is broken.
    """
    name = config.dataset
    fallbacks = [f for f in (config.fallback_dataset or "").split(",") if f]
    options = {"fold": config.tfd_fold} if name == "tfd" else {}
    if name == "mnist":
        # The demos never touch the network: MNIST is used when it is on disk.
        options = dict(download=not fallbacks, progress=sys.stderr.isatty())
    try:
        return load_dataset(name, data_dir, **options), None
    except DatasetError as exc:
        first = exc
    if not first.missing:
        # Broken data is never papered over by a stand-in: the user must know (a bad
        # input, exit status 2, as a bad argument).
        raise BadInput(str(first)) from None
    tried = []
    for alt in fallbacks:
        try:
            data = load_dataset(alt, data_dir)
        except DatasetError as exc:
            file, _, why = str(exc).split(". ")[0].partition(": ")
            tried.append(f"{alt} ({file.rsplit('/', 1)[-1]}: {why})" if why else alt)
            continue
        return data, f"{name} not found in {resolve_data_dir(data_dir)}, so the stand-in {alt}"
    if name == "tfd":
        where = resolve_data_dir(data_dir)
        stand_ins = (f"; the stand-ins this preset uses instead are missing too: "
                     f"{', '.join(tried)}" if tried else "")
        raise TrainingError(
            f"{where / 'TFD_48x48.mat'}: not found (TFD is not public: point --data-dir at your "
            f"copy){stand_ins}. Fix: put olivettifaces.mat or frey_rawface.mat in {where} and "
            f"run --dataset olivetti or --dataset frey (see data/README.md)") from None
    raise TrainingError(str(first)) from None


def data_digest(data):
    """sha256 of a dataset's content: the three splits' pixels and the image shape.
    A checkpoint records it; resuming on other data refuses."""
    h = hashlib.sha256(f"{tuple(data.image_shape)}".encode())
    for part in ("train", "valid", "test"):
        x = np.ascontiguousarray(getattr(data, part))
        h.update(f"|{part}|{x.dtype.str}|{x.shape}|".encode())
        h.update(x.tobytes())
    return h.hexdigest()
