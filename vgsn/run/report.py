"""``report.md`` of a run folder: settings, this run's numbers beside the paper's, figures.

Every number says what it is: which GPDE protocol (vgsn's, sigma chosen on
validation rows; or the paper-era script's, sigma chosen on the rows it scores),
which split, which density the importance-weighted estimate is
(``vgsn.eval.bound.iwll_kind``), whether the test images are held out (TFD fold
'all' is not), and what the chain scores measure (``vgsn.eval.chainscore``). Plain
text only: nothing here is symbolic.
"""
import sys
from pathlib import Path

from vgsn.run import presets as P
from vgsn.run import provenance

__all__ = ["write_report", "FIGURE_TITLES", "results_lines", "chain_score_lines"]


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _per_update(seconds, updates):
    return f"{seconds / updates:.3f} s/update" if updates else "no updates"


FIGURE_TITLES = {
    "curves": "GPDE and variational bound on validation data (Fig. 4b)",
    "scatter": "-log p(x|z) against KL(q(z|x) || p(z)) (Fig. 4c)",
    "kl": "KL per latent dimension",
    "samples": "prior samples at several updates (Fig. 4d)",
    "chains": "chains from data: free (left), under partial control (right) (Fig. 3, 4a)",
    "chainscores": "chain scores against chain step, per branch (Fig. 3 measured)"}


def _figure_title(stem):
    kind, _, rest = stem.partition("_")
    return f"{FIGURE_TITLES.get(kind, kind)}{': ' + rest.replace('_', ' ') if rest else ''}"


def _num(v, fmt=".1f"):
    return "-" if v is None or v == "" else format(float(v), fmt)


def _grid(values):
    return ", ".join(f"{float(s):.3g}" for s in values)


def results_lines(c, final, counts, sigmas=None, paper_sigmas=None):
    """The results table of the final rows and the lines saying what each column is."""
    paper = P.PAPER_GPDE.get(c.name)
    k_bin = any(r.get("iwll_bin_test") is not None for r in final.values())
    kind = next((r.get("iwll_kind") for r in final.values() if r.get("iwll_kind")), None)
    head = c.gpde_protocol
    lines = ["| branch | GPDE test (sigma on valid) | sigma | GPDE, paper protocol (sigma on "
             "the test rows) | sigma | bound test | IWLL test | IWLL binarised test (k) | "
             "paper GPDE |", "|---|---|---|---|---|---|---|---|---|"]
    for branch, r in final.items():
        ref = f"{paper:g}" if paper is not None and branch in ("guided", "pretrain") else "-"
        edge = " (grid edge)" if r.get("gpde_sigma_at_edge") else ""
        pedge = " (grid edge)" if r.get("gpde_paper_sigma_at_edge") else ""
        ptest = (f"{_num(r.get('gpde_paper_test'))} +- {_num(r.get('gpde_paper_test_stderr'))}"
                 if r.get("gpde_paper_test") is not None else "-")
        binar = (f"{_num(r['iwll_bin_test'])} ({r.get('iwll_k')})"
                 if r.get("iwll_bin_test") is not None else "-")
        lines.append(f"| {branch} | {_num(r['gpde_test'])} +- {_num(r['gpde_test_stderr'])} | "
                     f"{_num(r['gpde_sigma'], '.3g')}{edge} | {ptest} | "
                     f"{_num(r.get('gpde_paper_sigma'), '.3g')}{pedge} | "
                     f"{_num(r.get('bound_test'))} | {_num(r.get('iwll_test'))} | {binar} | "
                     f"{ref} |")
    grid = f" from {{{_grid(sigmas)}}}" if sigmas is not None else ""
    pgrid = f" from {{{_grid(paper_sigmas)}}}" if paper_sigmas is not None else ""
    lines += ["", f"GPDE, vgsn's protocol: {c.gpde_samples:,} prior samples as Parzen centres, "
              f"sigma chosen on {counts['gpde_valid']:,} validation rows{grid}, mean "
              f"log-density of {counts['gpde_test']:,} test rows (nats, +- standard error). "
              f"Paper protocol (NN-Python WalkoutResults.py with LogPDFs.cross_validate_sigma): "
              f"sigma chosen{pgrid} on the same {counts['gpde_test']:,} test rows it reports, "
              f"so it is optimistic by the selection. The paper's text says its table used a "
              f"sigma from the validation set; the surviving script chose it on the scored rows."
              + ("" if head == "both" else
                 f" Headline protocol of this run (gpde_protocol): {head}."), "",
              f"Bound: -F(x) of Eq. 2 on {counts['bound_test']:,} test rows. IWLL: "
              f"importance-weighted estimate, k = {c.iwll_k}, on {counts['iwll']:,} test rows: "
              f"{kind or 'see vgsn.eval.bound.iwll_kind'}."]
    if k_bin:
        lines += ["", f"IWLL binarised: the same test rows dynamically binarised once from the "
                  f"seed, k = {c.iwll_k}: log-likelihood of dynamically binarised rows (the "
                  f"literature: about -85 to -90 nats for VAEs of this size at k = 5000"
                  + ("" if int(c.iwll_k) >= 5000 else
                     f"; at k = {c.iwll_k} the estimate is lower than at 5000") + ")."]
    elif c.x_type == "gaussian":
        lines += ["", "IWLL of the Gaussian model: a log-density on R^D of the grey pixels; "
                  "not comparable with binarised-MNIST numbers."]
    lines += ["", "Higher is better for all of them."]
    return lines


def _top(r):
    """'digit (share)' of the final states' most frequent class, or '-'."""
    top, share = r.get("top_class_final"), r.get("top_class_frac_final")
    if top is None or share is None or top != top:
        return "-"
    return f"{int(top)} ({share:.0%})"


def chain_score_lines(c, final, scorer_kind=None):
    """The chain-score table (Fig. 3 measured) of the final rows, or [] without scores."""
    scored = {b: r for b, r in final.items() if r.get("score_chains")}
    if not scored:
        return []
    pca = any(r.get("frechet_pca_final") is not None for r in scored.values())
    key = "frechet_pca" if pca else "frechet"
    conf_test = next((r.get("confidence_test") for r in scored.values()
                      if r.get("confidence_test") is not None), None)
    r0 = next(iter(scored.values()))
    lines = ["## Chain scores (Fig. 3 measured)", "",
             f"{r0['score_chains']:,} chains of {r0['score_steps']} steps, started from the "
             f"first {r0['score_chains']:,} test images, every state scored by "
             + ("a PCA of the training faces (no classes): Frechet distance in its features"
                if pca else
                "vgsn's digit classifier (vgsn.eval.chainscore): confidence = mean max-softmax "
                "(cleanliness; the test images: "
                f"{_num(conf_test, '.3f')}), switch rate = fraction of chains whose class "
                "changed since the previous step (mixing), classes visited per chain, and the "
                "Frechet distance of the classifier's last hidden features to the test set's "
                "(an MNIST analogue of FID); class TV = total variation between the final "
                "states' class histogram and the test set's (0: the data's mix, 0.9: one "
                "class), digit score = exp of the mean KL between p(y|x) and the states' "
                "marginal p(y) (an inception score; ~10 for clean, balanced digits, 1 for a "
                "collapse onto one class), top class = the most frequent final class and its "
                "share")
             + ". Prior: the same scores of the GPDE's prior samples. Lower Frechet is better.",
             ""]
    if pca:
        lines += ["| branch | Frechet (PCA) start | final | mean over steps | prior samples |",
                  "|---|---|---|---|---|"]
        for b, r in scored.items():
            lines.append(f"| {b} | {_num(r.get(key + '_start'))} | {_num(r.get(key + '_final'))}"
                         f" | {_num(r.get(key + '_mean'))} | {_num(r.get('prior_frechet_pca'))} |")
    else:
        lines += ["| branch | confidence start -> final | switch rate (mean) | classes visited "
                  "| never switched | Frechet start | final | mean | class TV start -> final "
                  "| digit score start -> final (test) | top class (share) | prior Frechet "
                  "| prior confidence |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for b, r in scored.items():
            lines.append(
                f"| {b} | {_num(r.get('confidence_start'), '.3f')} -> "
                f"{_num(r.get('confidence_final'), '.3f')} | "
                f"{_num(r.get('switch_rate_mean'), '.3f')} | "
                f"{_num(r.get('classes_visited_mean'), '.2f')} | "
                f"{_num(r.get('never_switched'), '.2f')} | {_num(r.get('frechet_start'))} | "
                f"{_num(r.get('frechet_final'))} | {_num(r.get('frechet_mean'))} | "
                f"{_num(r.get('class_tv_start'), '.3f')} -> {_num(r.get('class_tv_final'), '.3f')} | "
                f"{_num(r.get('digit_score_start'), '.2f')} -> "
                f"{_num(r.get('digit_score_final'), '.2f')} "
                f"({_num(r.get('digit_score_test'), '.2f')}) | "
                f"{_top(r)} | "
                f"{_num(r.get('prior_frechet'))} | {_num(r.get('prior_confidence'), '.3f')} |")
    return lines + [""]


def _best_lines(c, evals):
    crit = "gpde_paper_valid" if c.gpde_protocol == "paper" else "gpde_valid"
    best = {}
    for r in evals:
        if r.get(crit) is None:
            continue
        if r["branch"] not in best or r[crit] > best[r["branch"]][crit]:
            best[r["branch"]] = r
    if not best:
        return []
    what = ("paper-protocol validation GPDE" if crit == "gpde_paper_valid"
            else "validation GPDE")
    lines = ["", f"Best during training (the evaluation with the highest {what}; the paper "
             f"reports each model's best):", ""]
    for branch, r in best.items():
        lines.append(f"- {branch}: update {r['update']:,}, GPDE valid {r['gpde_valid']:.1f}, "
                     f"test {r['gpde_test']:.1f} +- {r['gpde_test_stderr']:.1f}"
                     + (f"; paper protocol test {r['gpde_paper_test']:.1f}"
                        if r.get("gpde_paper_test") is not None else ""))
    return lines


def _paper_lines(c, data, final):
    overlap = bool(getattr(data, "test_overlaps_train", False))
    comparable = (c.name in P.PAPER_GPDE and data.name == P.PRESETS[c.name].dataset
                  and c.gpde_samples == 10_000 and c.gpde_test_rows is None and not overlap)
    lines = ["", "### The paper's numbers (GPDE on the test set, nats; SPEC.md section 7)", "",
             "| experiment | GPDE |", "|---|---|"]
    lines += [f"| {name}{' (this preset)' if name == c.name else ''} | {v:g} |"
              for name, v in P.PAPER_GPDE.items()]
    for fam, refs in P.REFERENCE_GPDE.items():
        lines += [f"| {fam.upper()} {label} | {v:g} |" for label, v in refs]
    paper = P.PAPER_GPDE.get(c.name)
    if paper is not None and final:
        lines += [""] + [f"- {b}: paper {paper:g} against this run's {r['gpde_test']:.1f} "
                         f"(vgsn's protocol) and "
                         f"{_num(r.get('gpde_paper_test'))} (paper protocol on the test rows)"
                         for b, r in final.items() if b in ("guided", "pretrain")]
    lines += ["", "These numbers compare with this run's only for a paper preset run in full "
              "on the paper's data (10,000 samples, the whole test set, test images held out)"
              + (": this run is one." if comparable else
                 ": this run is not, so read its numbers as a check of the pipeline.")]
    if overlap:
        lines += ["", f"Not held out: {data.note} This run's test images are training images "
                  f"of other TFD folds: its numbers are not held out. The comparable TFD number "
                  f"is the mean over fold=0..4 (`--set tfd_fold=K` for K = 0..4, then "
                  f"`vgsn.eval.bound.fold_summary` of the five runs' gpde_test)."]
    return lines


def _code2015_lines(c):
    if not (c.dataset == "tfd" and c.guide_act_penalty == "code2015"
            and c.pretrain_x_type is not None):
        return []
    return (["", "What --code2015 cannot give for TFD (vgsn/presets.py, code2015):", ""]
            + [f"- {line}" for line in P.CODE2015_TFD_UNDEFINED])


def write_report(out, config, data, data_note, metrics, timing, eval_rows, update, backend,
                 sigmas=None, paper_sigmas=None, scorer_kind=None):
    """Write ``report.md``; returns its path.

    Parameters
    ----------
    out : Path
    config : vgsn.run.presets.Preset
    data : vgsn.data.datasets.Dataset
    data_note : str or None
        Why a fallback dataset was used.
    metrics : vgsn.run.folder.Metrics
    timing : dict
        Seconds per phase (``timing.json``).
    eval_rows : dict
        Rows behind each number (``vgsn.run.evaluate.EvalSets.counts``): ``gpde_valid``,
        ``gpde_test``, ``bound_test``, ``iwll``.
    update : int
        The run's last update.
    backend : str
        The symbolic library and its version, e.g. ``'pytensor 3.3.8'``.
    sigmas, paper_sigmas : sequence of float, optional
        The two GPDE grids, printed in the protocol lines.
    scorer_kind : str, optional
        'classifier' or 'pca' (unused when the rows say it).
    """
    c, out, t = config, Path(out), timing
    final = {r["branch"]: r for r in metrics.select("final")}
    lines = [f"# vgsn run: {c.name}", "", c.summary or "(custom settings)", ""]
    lines += [f"- dataset: {data.source} ({len(data.train):,} train / {len(data.valid):,} valid "
              f"/ {len(data.test):,} test, {data.image_shape[0]}x{data.image_shape[1]})"]
    if data_note:
        lines += [f"- {data_note}: the preset's fallback above was used"]
    if getattr(data, "note", ""):
        lines += [f"- data: {data.note}"]
    after = (f"the guided {c.steps}-step chain"
             + (" and the 1-step VAE, one update each per step" if c.vae_branch else ""))
    lines += [f"- updates: {c.pretrain_updates:,} pre-training (1-step VAE) + "
              f"{c.chain_updates:,} after the fork ({after})",
              f"- minibatch rows: {'distinct (drawn without repeats)' if c.distinct_rows else 'drawn with replacement, as the 2015 code'}",
              f"- backend: {backend}, Python {sys.version.split()[0]}, seed {c.seed}",
              f"- time: compiling {_hms(t['compile_s'])}, pre-training {_hms(t['pretrain_s'])} "
              f"({_per_update(t['pretrain_s'], t['pretrain_updates'])}), after the fork "
              f"{_hms(t['fork_s'])} ({_per_update(t['fork_s'], t['fork_updates'])}), "
              f"periodic evaluation {_hms(t['eval_s'])}, final evaluation "
              f"{_hms(t['final_eval_s'])}", ""]
    lines += ["## Results on the test set", ""]
    lines += results_lines(c, final, eval_rows, sigmas, paper_sigmas)
    lines += _best_lines(c, metrics.select("eval"))
    lines += _paper_lines(c, data, final)
    lines += _code2015_lines(c)
    lines += [""] + chain_score_lines(c, final, scorer_kind)
    figs = sorted((out / "figures").glob("*.png"))
    if figs:
        lines += ["## Figures", ""]
        for f in figs:
            lines += [f"### {_figure_title(f.stem)}", "", f"![{f.stem}](figures/{f.name})", ""]
    lines += [""] + provenance.report_lines(out)
    lines += ["", "## Settings", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in c.to_dict().items() if k not in ("summary",)]
    lines += ["", f"Metrics: `metrics.jsonl`, `train_*.csv`, `eval.csv`; per-step chain scores: "
              f"`evals/chainscores_*.npz`; checkpoint: `checkpoint.h5` (update {update:,}); "
              f"log: `log.txt`.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
