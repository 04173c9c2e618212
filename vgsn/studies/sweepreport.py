"""A sweep's aggregated results: ``sweep.csv``, ``sweep_report.md``, a figure per metric.

Reads only the sweep folder (``sweep.json`` and the finished runs' ``eval.csv``), so
``python -m vgsn.sweep --report SWEEP_DIR`` rebuilds it at any time from whatever
has finished. Every numeric column of the runs' final rows is aggregated per grid
point and branch: mean, sample standard deviation (ddof 1) and the number of
values; columns added to eval.csv later need no change here.

A grid over TFD's held-out folds (``--grid tfd_fold=0,1,2,3,4``) also gets the GAN
paper's per-fold protocol: the points that differ only in the fold are summarised
with :func:`vgsn.eval.bound.fold_summary` (each fold's mean over seeds, then the
mean over the folds, their spread and standard error): :func:`fold_means`, rows
whose ``tfd_fold`` reads ``mean`` in ``sweep.csv`` and in the report's tables.
"""
import csv
import io
import itertools
import json
import math
import re
from datetime import datetime
from pathlib import Path

import numpy as np

from vgsn.run import presets as P
from vgsn.eval.bound import fold_summary

__all__ = ["final_rows", "point_status", "collect", "aggregate", "fold_means", "write_report",
           "load_spec", "canonical_text", "KEEP", "FOLD_FIELD", "FOLD_MEAN"]

# Fields that change what is logged or drawn, never a final number: a point that
# differs from the preset only in these still is the paper's experiment.
BOOKKEEPING = {"figures", "log_every", "checkpoint_every", "eval_every", "scatter_every",
               "samples_at", "chain_rows", "chain_length", "fault_at"}
# Files of a point folder that are the sweep's, not the run's, and the run folder's lock
# (never removed: vgsn.run.lock).
KEEP = {"command.txt", "job.log", ".lock"}
#: The preset field of TFD's fold, and what a summary row has in its place.
FOLD_FIELD, FOLD_MEAN = "tfd_fold", "mean"


def canonical_text(value):
    """The command-line text of a typed field value (``vgsn.run.config.parse_value`` inverts it)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def load_spec(sweep_dir):
    """The sweep's record (``sweep.json``); ``ValueError`` when there is none."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise ValueError(f"{sweep_dir}: no sweep.json here (not a sweep folder)")
    return json.loads(path.read_text())


def final_rows(run_dir):
    """The ``kind == 'final'`` rows of a run's eval.csv (dicts of text), [] when none."""
    path = Path(run_dir) / "eval.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("kind") == "final"]


def point_status(run_dir):
    """'finished' (final rows and report.md), 'checkpoint' (can resume), 'started'
    (run files but no checkpoint yet) or 'new'."""
    d = Path(run_dir)
    if (d / "report.md").is_file() and final_rows(d):
        return "finished"
    if (d / "checkpoint.h5").is_file():
        return "checkpoint"
    if d.is_dir() and any(p.name not in KEEP for p in d.iterdir()):
        return "started"
    return "new"


# ---------------------------------------------------------------------------

def _number(text):
    """float of a CSV cell; booleans count 1 / 0; empty -> NaN; None when not a number."""
    text = (text or "").strip()
    if text == "" or text.lower() == "none":
        return math.nan
    if text in ("True", "False", "true", "false"):
        return 1.0 if text.lower() == "true" else 0.0
    try:
        return float(text)
    except ValueError:
        return None


def collect(sweep_dir, spec):
    """The finished points' final rows: list of (point, branch, {column: float}).

    Every column whose values in the final rows are all numbers (or empty) is kept,
    so columns added to eval.csv later are aggregated without a change here."""
    rows, numeric = [], []
    for point in spec["points"]:
        d = Path(sweep_dir) / point["folder"]
        if point_status(d) != "finished":
            continue
        for r in final_rows(d):
            rows.append((point, r.get("branch", ""), r))
            for k in r:   # eval.csv's column order
                if k not in ("branch", "kind", "phase", None) and k not in numeric:
                    numeric.append(k)
    keep = [c for c in numeric if all(_number(r.get(c, "")) is not None for _, _, r in rows)]
    return [(p, b, {c: _number(r.get(c, "")) for c in keep}) for p, b, r in rows], keep


def _paper_applies(spec, settings):
    """True when a point is the preset's own experiment: every grid value and --set
    equals the preset's value, bookkeeping fields aside (conservative)."""
    base = P.get_preset(spec["preset"])
    for k, v in dict(spec["fixed"], **settings).items():
        if k not in BOOKKEEPING and canonical_text(getattr(base, k, None)) != v:
            return False
    return True


def aggregate(sweep_dir, spec):
    """One dict per (grid point, branch): settings, branch, runs, and per metric
    'mean', 'std' (sample, ddof 1; NaN below 2 values), 'n' (finite values);
    'paper' is the paper's test GPDE where it applies (guided branch only)."""
    data, metrics = collect(sweep_dir, spec)
    groups = {}
    for point, branch, values in data:
        key = (tuple(point["settings"].get(k) for k in spec["grid"]), branch)
        groups.setdefault(key, []).append(values)
    paper = P.PAPER_GPDE.get(spec["preset"])
    out = []
    for combo in itertools.product(*spec["grid"].values()):
        for (key, branch), runs in groups.items():
            if key != combo:
                continue
            settings = dict(zip(spec["grid"], combo))
            row = {"settings": settings, "branch": branch, "runs": len(runs), "metrics": {}}
            for m in metrics:
                x = np.array([r[m] for r in runs], dtype=np.float64)
                x = x[np.isfinite(x)]
                row["metrics"][m] = {
                    "mean": float(np.mean(x)) if x.size else math.nan,
                    "std": float(np.std(x, ddof=1)) if x.size > 1 else math.nan, "n": int(x.size)}
            row["paper"] = (paper if paper is not None and branch == "guided"
                            and _paper_applies(spec, settings) else None)
            out.append(row)
    return out, metrics


def fold_means(rows, spec, metrics):
    """The held-out TFD protocol: the rows of :func:`aggregate` that differ only in
    ``tfd_fold``, one summary per (other settings, branch).

    Each fold counts once, with its mean over seeds; the folds are the held-out ones
    of the grid (0-4; 'all', the 2015 code's split whose test images are training
    images of other folds, is no held-out fold and is left out). Empty unless the
    grid sweeps ``tfd_fold`` over two or more held-out folds.

    Returns
    -------
    list of dict
        Like :func:`aggregate`'s rows, ``settings[tfd_fold] == 'mean'``, ``runs`` the
        runs over those folds, ``folds`` the folds with a finished run, and per metric
        :func:`vgsn.eval.bound.fold_summary` of the folds' means: 'mean', 'std' (across
        folds, ddof 1), 'stderr' (std / sqrt(n)), 'n' (folds with a value), 'folds'
        (which); std and stderr NaN below 2 folds, as every spread of the report.
        ``paper`` is None: the paper's number is of fold 'all', another experiment.
    """
    held_out = [v for v in spec["grid"].get(FOLD_FIELD, ()) if v != "all"]
    if len(held_out) < 2:
        return []
    groups = {}
    for r in rows:
        fold = r["settings"][FOLD_FIELD]
        if fold in held_out:
            rest = {k: (FOLD_MEAN if k == FOLD_FIELD else v) for k, v in r["settings"].items()}
            groups.setdefault((tuple(rest.items()), r["branch"]), []).append((fold, r))
    out = []
    for (rest, branch), by_fold in groups.items():     # rows come in grid order
        row = {"settings": dict(rest), "branch": branch, "folds": [f for f, _ in by_fold],
               "runs": sum(r["runs"] for _, r in by_fold), "metrics": {}, "paper": None}
        for m in metrics:
            have = [(f, r["metrics"][m]["mean"]) for f, r in by_fold if r["metrics"][m]["n"]]
            if not have:
                row["metrics"][m] = {"mean": math.nan, "std": math.nan, "stderr": math.nan,
                                     "n": 0, "folds": []}
                continue
            summary = fold_summary([v for _, v in have])
            if summary["n"] < 2:      # fold_summary says 0 for one fold: no spread is known
                summary.update(std=math.nan, stderr=math.nan)
            row["metrics"][m] = dict(summary, folds=[f for f, _ in have])
        out.append(row)
    return out


def _fmt(x, digits=4):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _constant(rows, m):
    vals = {r["metrics"][m]["mean"] for r in rows if r["metrics"][m]["n"]}
    spreads = [r["metrics"][m]["std"] for r in rows if r["metrics"][m]["n"] > 1]
    return len(vals) == 1 and all(s == 0 for s in spreads)


def _figure(rows, spec, metric, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = list(spec["grid"])
    xname = grid[0] if grid else None
    xs = spec["grid"][xname] if xname else [spec["preset"]]
    numeric = xname is not None and all(_number(v) is not None and v.lower() not in
                                        ("true", "false") for v in xs)
    pos = {v: (float(v) if numeric else i) for i, v in enumerate(xs)}
    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lines = {}
    for r in rows:
        rest = ", ".join(f"{k}={r['settings'][k]}" for k in grid[1:])
        label = r["branch"] + (f" ({rest})" if rest else "")
        lines.setdefault(label, []).append(r)
    for i, (label, group) in enumerate(lines.items()):
        x = [pos[r["settings"][xname]] if xname else 0 for r in group]
        y = [r["metrics"][metric]["mean"] for r in group]
        e = [0 if math.isnan(r["metrics"][metric]["std"]) else r["metrics"][metric]["std"]
             for r in group]
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, color=f"C{i % 10}", label=label)
    for r in rows:
        if r["paper"] is not None and metric == "gpde_test":
            ax.plot([pos[r["settings"][xname]] if xname else 0], [r["paper"]], "k*",
                    markersize=10, label="paper")
    if not numeric:
        ax.set_xticks(list(pos.values()), list(pos))
    ax.set_xlabel(xname or "preset")
    ax.set_ylabel(metric)
    ax.set_title(f"{spec['preset']}: {metric}, mean +- sample std over seeds", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _fold_lines(folds, grid, branches, metric, has_paper):
    """The table rows of the fold means of ``metric``: one per setting of the other fields."""
    lines, by_rest = [], {}
    for r in folds:
        by_rest.setdefault(tuple(r["settings"][k] for k in grid), {})[r["branch"]] = r
    for rest, mine in by_rest.items():
        cells = [f"**{FOLD_MEAN} over folds**" if k == FOLD_FIELD else v
                 for k, v in zip(grid, rest)]
        for b in branches:
            s = mine[b]["metrics"][metric] if b in mine else None
            cells.append("" if s is None or not s["n"] else
                         f"{_fmt(s['mean'])} +- {_fmt(s['stderr'], 2) or 'n/a'} s.e. "
                         f"(std {_fmt(s['std'], 2) or 'n/a'}; folds {', '.join(s['folds'])})")
        lines.append("| " + " | ".join(cells + ([""] if has_paper else [])) + " |")
    return lines


def write_report(sweep_dir, spec=None, figures=True):
    """``sweep.csv``, ``sweep_report.md`` and ``figures/<metric>.png`` from whatever
    has finished; returns the report's path."""
    sweep_dir = Path(sweep_dir)
    spec = spec or load_spec(sweep_dir)
    rows, metrics = aggregate(sweep_dir, spec)
    folds = fold_means(rows, spec, metrics)
    grid = list(spec["grid"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(grid + ["branch", "runs"] + [f"{m}_{s}" for m in metrics
                                             for s in ("mean", "std", "n")] + ["paper_gpde_test"])
    for r in rows + folds:      # the fold means last, their tfd_fold 'mean'
        w.writerow([r["settings"][k] for k in grid] + [r["branch"], r["runs"]]
                   + [v for m in metrics for v in (repr(r["metrics"][m]["mean"]),
                      repr(r["metrics"][m]["std"]), r["metrics"][m]["n"])]
                   + ["" if r["paper"] is None else r["paper"]])
    (sweep_dir / "sweep.csv").write_text(buf.getvalue())
    status = {p["folder"]: point_status(sweep_dir / p["folder"]) for p in spec["points"]}
    done = sum(s == "finished" for s in status.values())
    grid_text = "; ".join(f"{k} in {{{', '.join(v)}}}" for k, v in spec["grid"].items()) or "none"
    lines = [f"# Sweep of {spec['preset']}", "",
             f"- grid: {grid_text}; fixed: "
             + (", ".join(f"{k}={v}" for k, v in spec["fixed"].items()) or "nothing"),
             f"- seeds: {', '.join(map(str, spec['seeds']))}",
             f"- executor: {spec['executor']['name']}; finished {done} of {len(status)} runs"
             f" (written {datetime.now():%Y-%m-%d %H:%M})",
             "- every cell: mean +- sample standard deviation (n = runs with a value) over "
             "seeds of the runs' final rows (eval.csv, kind 'final'); sweep.csv has the same "
             "numbers at full precision.",
             "- the paper's number (test GPDE, SPEC.md section 7) stands beside the guided "
             "branch only where the point is the preset's own experiment (every grid value "
             "and --set equal to the preset's, bookkeeping fields aside): any other setting "
             "is a different experiment from the one the paper reports."]
    if folds:
        lines.append(
            f"- TFD folds: the rows '{FOLD_FIELD} = {FOLD_MEAN}' are the held-out per-fold "
            "protocol (the GAN paper's): each fold's mean over seeds, then "
            "vgsn.eval.bound.fold_summary across the folds: mean +- standard error "
            "(s.e. = std / sqrt(folds); std across folds, ddof 1), the folds with a value named; "
            f"fold 'all' is no held-out fold and is left out. In sweep.csv these rows have "
            f"{FOLD_FIELD} '{FOLD_MEAN}', *_std the std across folds and *_n the folds.")
    missing = [f for f, s in status.items() if s != "finished"]
    if missing:
        lines.append(f"- not finished ({len(missing)}): " + ", ".join(
            f"{f} ({status[f]})" for f in missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if not rows:
        lines += ["", "No run has finished yet."]
    const = [m for m in metrics if rows and _constant(rows, m)]
    if const:
        lines += ["", "The same in every run: " + ", ".join(
            f"{m} = {_fmt(next(r['metrics'][m]['mean'] for r in rows if r['metrics'][m]['n']), 6)}"
            for m in const)]
    branches = list(dict.fromkeys(r["branch"] for r in rows))
    if figures and rows:
        (sweep_dir / "figures").mkdir(exist_ok=True)
    for m in [m for m in metrics if m not in const]:
        has_paper = m == "gpde_test" and any(r["paper"] is not None for r in rows)
        lines += ["", f"## {m}", "",
                  "| " + " | ".join(grid + branches + (["paper (guided)"] if has_paper else []))
                  + " |", "|" + "---|" * (len(grid) + len(branches) + has_paper)]
        for combo in itertools.product(*spec["grid"].values()):
            mine = {r["branch"]: r for r in rows if tuple(r["settings"][k] for k in grid) == combo}
            if not mine:
                continue
            cells = list(combo)
            for b in branches:
                s = mine[b]["metrics"][m] if b in mine else None
                cells.append("" if s is None or not s["n"] else
                             f"{_fmt(s['mean'])} +- {_fmt(s['std'], 2) or 'n/a'} (n={s['n']})")
            if has_paper:
                g = mine.get("guided")
                cells.append(_fmt(g["paper"]) if g and g["paper"] is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines += _fold_lines(folds, grid, branches, m, has_paper)
        if figures:
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", m) + ".png"
            _figure(rows, spec, m, sweep_dir / "figures" / name)
            lines += ["", f"![{m}](figures/{name})"]
    path = sweep_dir / "sweep_report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
