"""Check the paper's Sec. 7 claims at a scale that runs here, and write the reproduction document.

    python -m vgsn.reproduce --out runs/reproduce --seeds 1 2 3 --doc docs/reproduction.md
    python -m vgsn.reproduce --out runs/reproduce --report-only     # OUT/reproduction.md
    python -m vgsn.reproduce --tiny --out /tmp/repro                 # seconds: the tests' mode

Runs the short presets ``check-mnist1``, ``check-ork`` and ``check-var``
(``vgsn.run.presets.CHECK_PRESETS``, about 40 minutes each on two quiet cores) once per
seed into ``OUT/<preset>-s<seed>``. It is resumable: a finished run (its
``report.md`` written after the final evaluation) is skipped, a stopped one (a
``checkpoint.h5``) is resumed exactly, a folder stopped before its first checkpoint
is started again. Then it reads the run folders and writes the document: for every
claim of Sec. 7 one row with the claim, the paper's evidence, what vgsn measured
(each seed and the spread), and a verdict computed from the numbers by the rule
printed beside it (:data:`CLAIMS`):

- **holds**: the rule's inequality holds in every seed;
- **does not hold at this scale**: it fails in at least one seed (the row says in how
  many);
- **not testable here**: a number it needs is missing (runs absent or unfinished, or
  no classifier scores, e.g. faces).

A claim that does not show at the short scale is a result, not a failure. The
figures are copied beside the document (Fig. 3's of every seed). ``--tiny`` runs the tiny
test preset in three variants (mnist1-like, ORK-like, VAR-like) instead: seconds,
for the tests; its numbers mean nothing.
"""
import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from vgsn.run import presets as P
from vgsn.studies import fig3

__all__ = ["CLAIMS", "plan", "status", "run_all", "collect", "verdicts", "write_document",
           "main"]

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------
# what runs
# ---------------------------------------------------------------------------

def _tiny_presets():
    t = P.get_preset("tiny")
    gauss = dict(x_type="gaussian", vae_branch=False, iwll_binarized=False)
    return {"check-mnist1": replace(t, name="tiny-mnist1"),
            "check-ork": replace(t, name="tiny-ork", lam_kl=4.0, gamma_kl=0.1, **gauss),
            "check-var": replace(t, name="tiny-var", lam_kl=1.0, gamma_kl=0.0,
                                 paper_sigmas="mnist-var", **gauss)}


def plan(seeds, tiny=False, presets=P.CHECK_PRESETS, settings=None):
    """[(role, folder name, preset)] for every preset role x seed; the role is the
    ``check-*`` name the claims refer to. ``settings`` ({role: {field: value}}, a
    ``--config`` file's) change a role's preset (the seed stays ``--seeds``')."""
    base = _tiny_presets() if tiny else {n: P.get_preset(n) for n in P.CHECK_PRESETS}
    for role, changes in (settings or {}).items():
        if role not in base:
            raise ValueError(f"--config: {role!r} is not a check preset; known: "
                             f"{', '.join(base)}")
        base[role] = replace(base[role], **{k: v for k, v in changes.items() if k != "seed"})
    out = []
    for role in presets:
        if role not in base:
            raise ValueError(f"unknown check preset {role!r}; known: {', '.join(base)}")
        for s in seeds:
            out.append((role, f"{role}-s{int(s)}", replace(base[role], seed=int(s))))
    return out


def status(folder):
    """'finished', 'stopped' (resumable), 'empty' (nothing to resume) or 'absent'."""
    folder = Path(folder)
    if not folder.exists():
        return "absent"
    if (folder / "report.md").exists() and _final_rows(folder):
        return "finished"
    if (folder / "checkpoint.h5").exists():
        return "stopped"
    return "empty"


def run_all(out, seeds, tiny=False, presets=P.CHECK_PRESETS, data_dir=None, quiet=False,
            say=print, settings=None):
    """Run (or resume) every planned run in ``out``; returns {folder name: status before}."""
    from vgsn.run import train
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    for role, name, preset in plan(seeds, tiny, presets, settings):
        folder = out / name
        st = status(folder)
        done[name] = st
        if st == "finished":
            say(f"{name}: finished, skipped")
            continue
        if st == "stopped":
            say(f"{name}: resuming")
            train.resume(folder, quiet=quiet)
            continue
        if st == "empty":   # stopped before its first checkpoint: nothing to keep
            shutil.rmtree(folder)
        say(f"{name}: running {preset.name} (seed {preset.seed})")
        train.run(preset, folder, data_dir=data_dir, quiet=quiet)
    return done


# ---------------------------------------------------------------------------
# reading run folders
# ---------------------------------------------------------------------------

def _rows(folder):
    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _final_rows(folder):
    return {r["branch"]: r for r in _rows(folder) if r["kind"] == "final"}


def _scatter(folder, branch):
    files = sorted((Path(folder) / "evals").glob(f"scatter_{branch}_u*.npz"))
    if not files:
        return None
    with np.load(files[-1]) as d:
        return {"nll": float(np.mean(d["nll"])), "kl": float(np.mean(d["kl"]))}


def collect(out):
    """{role: {seed: run}} of the finished runs in ``out``; a run is a dict with
    ``final`` (branch -> final row), ``evals`` (the eval and final rows of the
    pre-training and guided branches, in update order), ``rows`` (every metrics row),
    ``scatter`` (branch ->
    mean nll / kl of the last Fig. 4c snapshot), ``folder`` and ``preset``."""
    found = {}
    for folder in sorted(Path(out).glob("check-*-s*")):
        if status(folder) != "finished":
            continue
        role, _, seed = folder.name.rpartition("-s")
        config = json.loads((folder / "config.json").read_text())
        rows = _rows(folder)
        evals = [r for r in rows if r["kind"] in ("eval", "final")
                 and r["branch"] in ("pretrain", "guided")]
        found.setdefault(role, {})[int(seed)] = {
            "final": _final_rows(folder), "evals": evals, "rows": rows, "folder": folder,
            "preset": config.get("name"),
            "scatter": {b: _scatter(folder, b) for b in ("guided", "vae", "pretrain")}}
    return found


# ---------------------------------------------------------------------------
# the claims and their rules
# ---------------------------------------------------------------------------

def _get(run, branch, key):
    r = (run or {}).get("final", {}).get(branch)
    v = None if r is None else r.get(key)
    return None if v is None else float(v)


def _paired(runs, fn):
    out = {}
    ork, var = runs.get("check-ork", {}), runs.get("check-var", {})
    for seed in sorted(set(ork) & set(var)):
        res = fn(ork[seed], var[seed])
        if res is not None:
            out[seed] = res
    return out


def _m_gpde(runs):
    def fn(o, v):
        a, b = _get(o, "guided", "gpde_test"), _get(v, "guided", "gpde_test")
        if a is None or b is None:
            return None
        return {"ORK GPDE": a, "VAR GPDE": b,
                "ORK GPDE (paper protocol)": _get(o, "guided", "gpde_paper_test"),
                "VAR GPDE (paper protocol)": _get(v, "guided", "gpde_paper_test")}, a > b
    return _paired(runs, fn)


def _m_peak(runs):
    out = {}
    for seed, run in runs.get("check-var", {}).items():
        ev = [r for r in run["evals"] if r.get("gpde_valid") is not None]
        if len(ev) < 3:
            continue
        i = int(np.argmax([r["gpde_valid"] for r in ev]))
        peak, last = ev[i], ev[-1]
        out[seed] = ({"GPDE peak at update": float(peak["update"]),
                      "last update": float(last["update"]),
                      "bound at the peak": float(peak["bound_valid"]),
                      "bound at the end": float(last["bound_valid"])},
                     peak["update"] < last["update"] and last["bound_valid"] > peak["bound_valid"])
    return out


def _m_recognisable(runs):
    def fn(o, v):
        vals = [_get(x, "guided", k) for x in (o, v) for k in ("prior_frechet", "prior_confidence")]
        if None in vals:
            return None
        of, oc, vf, vc = vals
        return ({"ORK prior Frechet": of, "VAR prior Frechet": vf, "ORK prior confidence": oc,
                 "VAR prior confidence": vc}, of < vf and oc >= vc)
    return _paired(runs, fn)


def _m_tradeoff(runs):
    def fn(o, v):
        so, sv = o["scatter"].get("guided"), v["scatter"].get("guided")
        if so is None or sv is None:
            return None
        return ({"ORK mean KL": so["kl"], "VAR mean KL": sv["kl"], "ORK mean -log p(x|z)":
                 so["nll"], "VAR mean -log p(x|z)": sv["nll"]},
                so["kl"] < sv["kl"] and so["nll"] > sv["nll"])
    return _paired(runs, fn)


#: The claims of Sec. 7: (key, claim, the paper's evidence, the rule in words, measure).
CLAIMS = [
    ("clean", "Guided chains stay clean and mix between modes; 1-step VAE chains degrade",
     "Fig. 3, by eye (chains of the guided 6-step model vs. the 1-step VAE, MNIST-1)",
     fig3.RULE, fig3.measure),
    ("gpde", "ORK beats VAR on GPDE", "table of Sec. 7: 265 (ORK) vs. 220 (VAR) nats",
     "per seed: check-ork guided gpde_test (vgsn's protocol) > check-var guided gpde_test",
     _m_gpde),
    ("peak", "VAR's GPDE peaks early while its bound keeps improving",
     "Fig. 4b (GPDE and bound against updates) and Sec. 7's text",
     "check-var, per seed: the evaluation with the highest validation GPDE comes before the "
     "last one, and the validation bound at the end is above the bound at that peak",
     _m_peak),
    ("recognisable", "ORK's samples stay recognisable",
     "Fig. 4d (prior samples at 30k / 60k / 120k updates), by eye",
     "per seed at the end: check-ork prior-sample Frechet < check-var's and ORK prior "
     "confidence >= VAR's (the digit classifier's mean max-softmax)", _m_recognisable),
    ("tradeoff", "The KL / reconstruction trade-off: ORK trades KL for -log p(x|z)",
     "Fig. 4c (150 validation rows, each averaged over 10 passes)",
     "per seed, the guided branch's last Fig. 4c snapshot: ORK mean KL < VAR's and ORK mean "
     "-log p(x|z) > VAR's", _m_tradeoff),
]


def verdicts(runs):
    """One dict per claim: key, claim, evidence, rule, per_seed {seed: (values, ok)},
    verdict."""
    out = []
    for key, claim, evidence, rule, measure in CLAIMS:
        per_seed = measure(runs)
        if not per_seed:
            verdict = "not testable here"
        elif all(ok for _, ok in per_seed.values()):
            verdict = "holds"
        else:
            verdict = "does not hold at this scale"
        out.append(dict(key=key, claim=claim, evidence=evidence, rule=rule, per_seed=per_seed,
                        verdict=verdict))
    return out


def _spread(per_seed):
    """'name: mean +- std (seed s: v, ...)' for each measured value."""
    names = list(next(iter(per_seed.values()))[0])
    parts = []
    for name in names:
        vals = [(s, v[0][name]) for s, v in sorted(per_seed.items()) if v[0][name] is not None]
        if not vals:
            continue
        x = np.array([v for _, v in vals])
        sd = f" +- {x.std(ddof=1):.3g}" if len(x) > 1 else ""
        each = ", ".join(f"s{s}: {v:.4g}" for s, v in vals)
        parts.append(f"{name} {x.mean():.4g}{sd} ({each})")
    return "; ".join(parts)


_FIGURES = [("check-mnist1", "chainscores.png", "chain scores against chain step, guided vs. "
             "1-step VAE (Fig. 3 measured)"),
            ("check-mnist1", "chains_guided_u*.png", "guided chains, free and under partial "
             "control (Fig. 3)"),
            ("check-mnist1", "chains_vae_u*.png", "1-step VAE chains (Fig. 3)"),
            ("check-ork", "curves.png", "ORK: GPDE and bound against updates (Fig. 4b)"),
            ("check-var", "curves.png", "VAR: GPDE and bound against updates (Fig. 4b)"),
            ("check-ork", "scatter_guided.png", "ORK: -log p(x|z) against KL (Fig. 4c)"),
            ("check-var", "scatter_guided.png", "VAR: -log p(x|z) against KL (Fig. 4c)"),
            ("check-ork", "samples_guided.png", "ORK: prior samples (Fig. 4d)"),
            ("check-var", "samples_guided.png", "VAR: prior samples (Fig. 4d)")]


def write_document(out, doc, command, figures_dir=None, referee=None):
    """Write the reproduction document ``doc`` from the run folders in ``out``; the
    figures (every seed's for Fig. 3, the first seed's for the others) go to
    ``figures_dir`` (default ``<doc stem>_figures`` beside it); ``referee``: a folder of
    ``tools/ref2015/score2015.py`` JSONs (``<code>_s<seed>_u<updates>.json``) for the
    2015 code's table. Returns (path, verdict dicts)."""
    doc = Path(doc)
    runs = collect(out)
    rows = verdicts(runs)
    figures_dir = Path(figures_dir) if figures_dir else doc.parent / f"{doc.stem}_figures"
    lines = ["# Reproduction: the claims of Sec. 7 at a scale that runs here", "",
             f"Made by `{command}` from the run folders in `{out}`; regenerate the document "
             f"alone with `--report-only`.", ""]
    seeds = {role: sorted(s) for role, s in runs.items()}
    lines += ["Runs (finished): " + (", ".join(f"{role} seeds {', '.join(map(str, s))}"
                                               for role, s in sorted(seeds.items())) or "none"),
              ""]
    for role in sorted(runs):
        first = runs[role][min(runs[role])]
        name = first["preset"]
        lines.append(f"- {role}: preset `{name}`"
                     + (f": {P.PRESETS[name].summary}" if name in P.PRESETS else ""))
    lines += ["", "Verdicts: **holds** = the rule holds in every seed; **does not hold at this "
              "scale** = it fails in at least one; **not testable here** = a number it needs is "
              "missing. The short runs are far shorter than the paper's (4.5k against 200k "
              "updates): a claim that does not show here is a result at this scale, not a "
              "verdict on the paper.", "",
              "| claim | paper's evidence | rule | measured (mean +- std over seeds; each seed) "
              "| verdict |", "|---|---|---|---|---|"]
    for r in rows:
        ps = r["per_seed"]
        measured = "-" if not ps else _spread(ps)
        n_ok = sum(ok for _, ok in ps.values())
        verdict = r["verdict"] + (f" ({n_ok} of {len(ps)} seeds)" if ps else "")
        lines.append(f"| {r['claim']} | {r['evidence']} | {r['rule']} | {measured} | "
                     f"**{verdict}** |")
    lines += [""] + fig3.trajectory_lines(runs)
    if referee is not None:
        table = fig3.referee_lines(referee)
        lines += ["### The 2015 code as referee", "",
                  "The guided phase trained by the authors' own Theano code "
                  "(`tools/ref2015/walk2015.py`: Python 2.7, Theano 1.0.5, the 2015 settings of "
                  "`MnistWalkoutTest.py` at the check scale) and by vgsn with the same start and "
                  "settings (`tools/ref2015/walk_vgsn.py`), from the q/p of the run of the same "
                  "seed at the fork, every chain scored by the same scorer "
                  "(`tools/ref2015/score2015.py`); 0 updates = the start. "
                  + (f"From `{referee}`." if table else f"No scores found in `{referee}`."),
                  ""] + table
    copied = []
    for role, pattern, caption in _FIGURES:
        if role not in runs:
            continue
        seeds = sorted(runs[role]) if role == "check-mnist1" else [min(runs[role])]
        for seed in seeds:
            folder = runs[role][seed]["folder"]
            found = sorted((folder / "figures").glob(pattern))
            if not found:
                continue
            figures_dir.mkdir(parents=True, exist_ok=True)
            suffix = f"_s{seed}" if len(seeds) > 1 else ""
            dest = figures_dir / f"{role}{suffix}_{found[-1].name}"
            shutil.copyfile(found[-1], dest)
            copied.append((caption, f"seed {seed}", dest))
    if copied:
        lines += ["", "## Figures (Fig. 3: every seed; the others: the first seed)", ""]
        for caption, seed, dest in copied:
            rel = Path(dest).relative_to(doc.parent) if doc.parent in Path(dest).parents else dest
            lines += [f"### {caption}, {seed}", "", f"![{caption}]({rel})", ""]
    lines += ["", "Each run's own `report.md` (in its folder) has every number with its "
              "protocol, split and density.", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))
    return doc, rows


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------

def _read_config(path, roles, tiny):
    """{role: {field: typed value}} of a ``--config`` file (a mapping of check presets
    to settings)."""
    from vgsn.run import config as C
    data = C.read_yaml(path)
    if not isinstance(data, dict) or not all(isinstance(v, (dict, type(None)))
                                             for v in data.values()):
        raise ValueError(f"--config {path}: must map check presets to their settings "
                         f"(check-ork: {{lam_kl: 4.0}}), as --print-config writes")
    return {role: C.settings_from_mapping(v, f"--config {path}: {role}")
            for role, v in data.items()}


def _dump_config(planned):
    """``--print-config``: each role's settings (of its first seed) as YAML."""
    import yaml
    roles, seeds = {}, {}
    for role, _, preset in planned:
        roles.setdefault(role, preset)
        seeds.setdefault(role, []).append(preset.seed)
    header = "".join(f"# {role}: seeds {seeds[role]}\n" for role in roles)
    body = {role: p.to_dict() for role, p in roles.items()}
    for v in body.values():
        v.pop("seed")
    return ("# python -m vgsn.reproduce: every run's settings (preset < --config); "
            "the seed is --seeds'\n" + header
            + yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=1000))


def main(argv=None):
    """``python -m vgsn.reproduce``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m vgsn.reproduce", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", metavar="DIR", help="folder of the runs")
    parser.add_argument("--seeds", nargs="+", default=["1-3"], metavar="S",
                        help="the seeds: a list (1 2 3), a range (1-3) or both (default 1-3)")
    parser.add_argument("--config", metavar="FILE",
                        help="settings per check preset from a YAML file (check-ork: "
                             "{FIELD: VALUE, ...}, as --print-config writes; any subset); "
                             "precedence: preset < file")
    parser.add_argument("--print-config", action="store_true",
                        help="print every run's settings (YAML, read back by --config) and "
                             "exit; runs nothing")
    parser.add_argument("--presets", nargs="+", default=list(P.CHECK_PRESETS),
                        choices=P.CHECK_PRESETS, metavar="NAME",
                        help=f"a subset of {', '.join(P.CHECK_PRESETS)} (e.g. one per process)")
    parser.add_argument("--doc", metavar="FILE",
                        help="the document (default OUT/reproduction.md; the repository's: "
                             "--doc docs/reproduction.md)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing, write the document from the folders in --out")
    parser.add_argument("--tiny", action="store_true",
                        help="the tiny test preset in three variants: seconds, for tests")
    parser.add_argument("--referee", metavar="DIR",
                        help="a folder of tools/ref2015/score2015.py JSONs "
                             "(<code>_s<seed>_u<updates>.json): the 2015 code's table")
    parser.add_argument("--data-dir", metavar="DIR")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from vgsn.run import config as C
    try:
        seeds = C.parse_seeds(args.seeds)
        settings = _read_config(args.config, args.presets, args.tiny) if args.config else None
        planned = plan(seeds, args.tiny, args.presets, settings)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if args.print_config:
        print(_dump_config(planned), end="")
        return 0
    if args.out is None:
        parser.exit(2, f"{parser.prog}: error: --out DIR is needed (the folder of the runs)\n")
    # The repository's docs/ is written only when asked (--doc docs/reproduction.md).
    doc = Path(args.doc) if args.doc else Path(args.out) / "reproduction.md"
    command = "python -m vgsn.reproduce " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only")
    if not args.report_only:
        from vgsn.run.folder import TrainingError
        try:
            run_all(args.out, seeds, args.tiny, args.presets, args.data_dir, args.quiet,
                    say=lambda m: print(m, file=sys.stderr), settings=settings)
        except TrainingError as exc:
            print(f"python -m vgsn.reproduce: error: {exc}", file=sys.stderr)
            return 1
    if not collect(args.out) and doc.exists():
        # A report of no runs never replaces a document (a wrong --out, runs not finished).
        parser.exit(2, f"{parser.prog}: error: --out {args.out}: no finished runs there, so "
                       f"{doc} is left as it is; give the folder of the runs\n")
    path, rows = write_document(args.out, doc, command, referee=args.referee)
    for r in rows:
        print(f"{r['verdict']:28s} {r['claim']}", file=sys.stderr)
    print(path)
    return 0
