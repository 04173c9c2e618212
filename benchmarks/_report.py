"""The machine-readable lines that end a benchmark, shared by ``bench_chain.py`` and
``bench_vae.py``:

    RESULT <name>=<value> <name>=<value> ...
    RATIO <size>_<mode>_over_<first>=<r> ...

``RESULT`` holds the first back-end's figures in the order the issue names them;
``RATIO`` (only with several back-ends) each later back-end's seconds per update over
the first's, size by size. Scripts and the README parse these lines, so their field
names, order and number formats are each benchmark's own and never change here.
"""

__all__ = ["result_line", "ratio_line"]


def result_line(fields):
    """``RESULT name=value ...`` from ``fields``, a sequence of ``(name, value, spec)``
    (``spec`` a format spec such as ``".3f"``), in the order given."""
    return "RESULT " + " ".join(f"{name}={value:{spec}}" for name, value, spec in fields)


def ratio_line(seconds, sizes, modes):
    """``RATIO <size>_<mode>_over_<first>=<r:.3f> ...`` for every size and every back-end
    after the first; ``seconds[size, mode]`` is seconds per update. None with one
    back-end (there is nothing to compare)."""
    if len(modes) < 2:
        return None
    first = modes[0]
    return "RATIO " + " ".join(f"{size}_{m}_over_{first}={seconds[size, m] / seconds[size, first]:.3f}"
                               for size in sizes for m in modes[1:])
