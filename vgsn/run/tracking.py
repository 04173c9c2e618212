"""Live tracking of a run: TensorBoard events in the run folder (``--tensorboard``).

:class:`TensorBoard` writes every row the run writes to ``metrics.jsonl`` as scalars
(tag ``kind/branch/column``, step = the row's update) and each figure when it is
(re)drawn, as an image, into ``events.out.tfevents.*`` beside the run's other files:
``tensorboard --logdir runs/`` shows every run. It needs tensorboardX (the optional
extra ``pip install -e .[tensorboard]``). A resumed run drops the events written after
its checkpoint (``purge_step``), as it cuts the metrics files back.
"""
import numbers
from pathlib import Path

import numpy as np

from vgsn.run.folder import TrainingError

__all__ = ["TensorBoard", "HINT"]

HINT = "pip install -e .[tensorboard] (or pip install tensorboardX)"

#: Row columns that say what a row is, not a measurement.
_LABELS = ("update", "phase", "branch", "kind")


class TensorBoard:
    """A TensorBoard writer for the run folder ``out``; ``purge_step``: the update a
    resumed run continues from (events after it are dropped)."""

    def __init__(self, out, purge_step=None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise TrainingError(f"--tensorboard needs tensorboardX: {HINT}") from None
        self.out = Path(out)
        self.writer = SummaryWriter(logdir=str(self.out), purge_step=purge_step or None,
                                    flush_secs=30)
        self._drawn = {}     # figure file -> modification time when last written

    def row(self, row):
        """Every number of a metrics row (``Metrics.write``'s) as a scalar."""
        step = int(row["update"])
        for key, value in row.items():
            if key in _LABELS or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if np.isfinite(value):
                self.writer.add_scalar(f"{row['kind']}/{row['branch']}/{key}", float(value), step)

    def figures(self, step):
        """The figures drawn or redrawn since the last call, as images at ``step``."""
        from PIL import Image
        for path in sorted((self.out / "figures").glob("*.png")):
            stamp = path.stat().st_mtime_ns
            if self._drawn.get(path.name) == stamp:
                continue
            try:
                with Image.open(path) as im:
                    image = np.asarray(im.convert("RGB"))
            except OSError:          # being written; the next call takes it
                continue
            self._drawn[path.name] = stamp
            self.writer.add_image(f"figures/{path.stem}", image, int(step), dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()
