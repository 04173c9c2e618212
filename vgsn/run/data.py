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
    for alt in fallbacks:
        try:
            data = load_dataset(alt, data_dir)
        except DatasetError:
            continue
        return data, f"{name} not found in {resolve_data_dir(data_dir)}"
    if name == "tfd":
        raise TrainingError(
            f"{str(first).split('. Fix')[0]}. TFD is not public: if you have it, point --data-dir "
            f"at the folder holding TFD_48x48.mat; otherwise run on a public face stand-in: "
            f"--dataset olivetti (olivettifaces.mat) or --dataset frey (frey_rawface.mat), "
            f"see data/README.md") from None
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
