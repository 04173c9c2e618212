"""Fig. 3's claim checked on numbers a collapse cannot pass, for ``vgsn.reproduce``.

The claim: chains of the guided 6-step model stay clean and mix between digit classes,
while 1-step VAE chains degrade. Cleaner alone is not enough: chains that all fall onto
one easy digit (a "1") are confident and close to *some* digits, so the rule also asks
that the guided chains be no less diverse than the VAE's and that no class holds half of
their final states. Three pieces:

- :func:`measure`: the rule, per seed, on the final chain scores of ``check-mnist1``;
- :func:`trajectory_lines`: the class histogram's distance, digit score, most frequent
  class and guide accuracy at every evaluation of the guided phase, per seed, so a
  collapse is seen as it starts;
- :func:`referee_lines`: the table of chains trained by the 2015 code itself (and by vgsn
  with the same start and settings), scored by the same scorer (``tools/ref2015``).
"""
import json
import math
from pathlib import Path

__all__ = ["RULE", "measure", "condition_lines", "trajectory_lines", "referee_lines"]

RULE = ("check-mnist1, per seed at the end: guided chains cleaner than the 1-step VAE's "
        "(frechet_final lower, confidence_final higher) AND no less diverse (class_tv_final "
        "not higher, digit_score_final not lower, classes visited not fewer) AND no class "
        "holds half of the guided final states (top_class_frac_final < 0.5)")

#: (label, key in a final / eval row) of the per-seed values the rule reads.
_KEYS = (("Frechet", "frechet_final"), ("confidence", "confidence_final"),
         ("class TV", "class_tv_final"), ("digit score", "digit_score_final"),
         ("classes visited", "classes_visited_mean"), ("top-class share", "top_class_frac_final"))


def _value(row, key):
    v = None if row is None else row.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _parts(g, v):
    """{condition: holds} of the rule for the guided (g) and VAE (v) values by label."""
    return {"Frechet lower": g["Frechet"] < v["Frechet"],
            "confidence higher": g["confidence"] > v["confidence"],
            "class TV not higher": g["class TV"] <= v["class TV"],
            "digit score not lower": g["digit score"] >= v["digit score"],
            "classes visited not fewer": g["classes visited"] >= v["classes visited"],
            "top-class share < 0.5": g["top-class share"] < 0.5}


def _final_values(run):
    g, v = run["final"].get("guided"), run["final"].get("vae")
    vals = {f"{who} {label}": _value(row, key) for who, row in (("guided", g), ("VAE", v))
            for label, key in _KEYS}
    return None if any(x is None for x in vals.values()) else vals


def _split(vals):
    return ({label: vals[f"guided {label}"] for label, _ in _KEYS},
            {label: vals[f"VAE {label}"] for label, _ in _KEYS})


def measure(runs):
    """{seed: (values, ok)} of the rule over ``runs['check-mnist1']`` (``collect``'s)."""
    out = {}
    for seed, run in runs.get("check-mnist1", {}).items():
        vals = _final_values(run)
        if vals is not None:
            out[seed] = (vals, all(_parts(*_split(vals)).values()))
    return out


def condition_lines(runs):
    """Markdown: per seed, which of the rule's conditions hold and which fail."""
    lines = []
    for seed, run in sorted(runs.get("check-mnist1", {}).items()):
        vals = _final_values(run)
        if vals is None:
            continue
        parts = _parts(*_split(vals))
        failed = [k for k, ok in parts.items() if not ok]
        lines.append(f"- seed {seed}: " + ("every condition holds" if not failed else
                     "fails on " + ", ".join(failed) + "; holds on "
                     + (", ".join(k for k, ok in parts.items() if ok) or "none")))
    return lines + [""] if lines else []


def _top(row):
    top, share = _value(row, "top_class_final"), _value(row, "top_class_frac_final")
    return "-" if top is None or share is None else f"{int(top)} ({share:.0%})"


def _fmt(x, fmt):
    return "-" if x is None else format(x, fmt)


def _guide_acc(rows, update, span=100):
    """Mean guide accuracy of the guided branch's train rows in (update - span, update]."""
    acc = [r["guide_acc"] for r in rows if r.get("branch") == "guided"
           and r.get("kind") == "train" and r.get("guide_acc") is not None
           and update - span < r["update"] <= update]
    return sum(acc) / len(acc) if acc else None


def trajectory_lines(runs):
    """Markdown: per seed of ``check-mnist1``, the chain scores of both branches at every
    evaluation from the fork on (the fork's own row first), and the guide's accuracy."""
    found = runs.get("check-mnist1", {})
    if not found:
        return []
    lines = ["### Fig. 3: the rule's conditions per seed", ""] + condition_lines(runs)
    lines += ["### Fig. 3 along the guided phase", "",
             "Final chain states (300 chains x 50 steps) at every evaluation; class TV = "
             "distance of their class histogram to the test set's (0 = the data's mix), "
             "digit score = exp mean KL(p(y|x) || p(y)) (the test set: ~9.6), top = the most "
             "frequent class (its share). Guide accuracy: the guide's balanced accuracy on "
             "data vs. chain samples in training (0.5 = chance), mean of the last 100 "
             "updates. The row at the fork is the pre-trained model's.", ""]
    head = ("| seed | update | guided TV | guided digit score | guided top | guided Frechet "
            "| VAE TV | VAE digit score | VAE top | VAE Frechet | guide accuracy |")
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for seed, run in sorted(found.items()):
        rows = run.get("rows", [])
        evals = [r for r in rows if r.get("kind") in ("eval", "final")]
        fork = max((r["update"] for r in evals if r["branch"] == "pretrain"), default=None)
        updates = sorted({r["update"] for r in evals if r["branch"] == "guided"})
        if fork is not None:
            updates = [fork] + updates
        for u in updates:
            at = {r["branch"]: r for r in evals if r["update"] == u}
            g = at.get("guided", at.get("pretrain"))
            v = at.get("vae", at.get("pretrain"))
            lines.append(
                f"| {seed} | {u:,} | {_fmt(_value(g, 'class_tv_final'), '.3f')} | "
                f"{_fmt(_value(g, 'digit_score_final'), '.2f')} | {_top(g)} | "
                f"{_fmt(_value(g, 'frechet_final'), '.1f')} | "
                f"{_fmt(_value(v, 'class_tv_final'), '.3f')} | "
                f"{_fmt(_value(v, 'digit_score_final'), '.2f')} | {_top(v)} | "
                f"{_fmt(_value(v, 'frechet_final'), '.1f')} | "
                f"{_fmt(_guide_acc(rows, u) if u != fork else None, '.3f')} |")
    return lines + [""]


def _referee_name(path):
    """(code, seed, updates) from ``<code>_s<seed>_u<updates>.json``, else None."""
    parts = Path(path).stem.split("_")
    try:
        seed = int(parts[-2][1:]) if parts[-2].startswith("s") else None
        updates = int(parts[-1][1:]) if parts[-1].startswith("u") else None
    except (IndexError, ValueError):
        return None
    if seed is None or updates is None:
        return None
    return "_".join(parts[:-2]), seed, updates


def referee_lines(folder):
    """Markdown: the chain scores of every ``<code>_s<seed>_u<updates>.json`` in
    ``folder`` (written by ``tools/ref2015/score2015.py``), by seed, updates and code."""
    found = []
    for p in sorted(Path(folder).glob("*.json")):
        name = _referee_name(p)
        if name is None:
            continue
        try:
            summary = json.loads(p.read_text())["summary"]
        except (OSError, ValueError, KeyError):
            continue
        found.append((name[1], name[2], name[0], summary))
    if not found:
        return []
    lines = ["| seed | guided updates | trained by | confidence | Frechet | class TV "
             "| digit score | classes visited | switch rate | top class (share) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for seed, updates, code, s in sorted(found, key=lambda t: (t[0], t[1], t[2])):
        lines.append(
            f"| {seed} | {updates:,} | {code} | {_fmt(_value(s, 'confidence_final'), '.3f')} | "
            f"{_fmt(_value(s, 'frechet_final'), '.1f')} | "
            f"{_fmt(_value(s, 'class_tv_final'), '.3f')} | "
            f"{_fmt(_value(s, 'digit_score_final'), '.2f')} | "
            f"{_fmt(_value(s, 'classes_visited_mean'), '.2f')} | "
            f"{_fmt(_value(s, 'switch_rate_mean'), '.3f')} | {_top(s)} |")
    return lines + [""]
