"""Issues 15 and 16 in the run: preset fields and code2015 for TFD, both GPDE protocols,
the binarised IWLL and the chain scores in eval.csv and report.md, Fig. 4c as averaged
random rows, distinct minibatch rows, the TFD fold flag, the 2015 guide penalty against
numpy, and the reproduction document's verdict rules on constructed numbers."""
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vgsn.run import presets as P
from vgsn.studies import fig3, reproduce
from vgsn.run import evaluate as runeval
from vgsn.run import snapshots
from vgsn.run import train
from vgsn.run import schedules
from vgsn.run import data as rundata
from vgsn.run.report import write_report
from vgsn.run.folder import EVAL_COLUMNS, Metrics

from _paths import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "data"))     # the TFD file makers of test_datasets
from test_datasets import _write_tfd, tfd_layout  # noqa: E402


# ---- presets -------------------------------------------------------------------

def test_new_fields_keep_the_old_behaviour_by_default():
    c = P.get_preset("mnist2-ork")
    assert (c.gpde_protocol, c.distinct_rows, c.guide_act_penalty, c.tfd_fold) == \
        ("both", False, "vgsn", "all")
    assert P.model_args(c) == P.chain_model_args(c) and not P.rebuilt_at_fork(c)
    assert P.paper_grid(c) == "mnist" and P.paper_grid(P.get_preset("mnist2-var")) == "mnist-var"
    assert P.paper_grid(P.get_preset("tfd-ork")) == "tfd"
    for name, value in (("gpde_protocol", "best"), ("guide_act_penalty", "2014"),
                        ("tfd_fold", "7"), ("paper_sigmas", "faces"), ("score_chains", 1)):
        with pytest.raises(ValueError, match=name):
            replace(c, **{name: value}).validate()


def test_code2015_for_tfd_is_what_the_script_would_have_run():
    c = P.code2015(P.get_preset("tfd-ork")).validate()
    assert (c.z_dim, c.q_hidden, c.p_hidden) == (50, (1500, 1500), (1500, 1500))
    assert (c.pretrain_x_type, c.x_type) == ("bernoulli", "gaussian")
    assert (c.batch_size, c.pretrain_batch_repeat, c.batch_repeat, c.data_rows) == (400, 6, 5, 800)
    assert (c.pretrain_momentum, c.chain_momentum) == (0.5, 0.9)
    assert (c.kl_warmup, c.kl_warmup_from, c.gamma_kl, c.lam_kl) == (5000, 0.0, 0.0, 5.0)
    assert (c.steps, c.step_decay, c.pretrain_updates, c.chain_updates) == (5, 0.1, 100_000, 100_000)
    assert (c.guide_act_penalty, c.distinct_rows, c.patch_side) == ("code2015", False, 25)
    # pre-training and the chain get their own constructor arguments
    assert P.model_args(c)["x_type"] == "bernoulli" and P.model_args(c)["batch_repeat"] == 6
    assert P.chain_model_args(c)["x_type"] == "gaussian" and P.chain_model_args(c)["momentum"] == 0.5
    assert P.loop_args(c)["momentum"] == 0.9 and P.rebuilt_at_fork(c)
    assert any("lam_kld_c" in line for line in P.CODE2015_TFD_UNDEFINED)
    # the KL weight from 0: the script's scale * lam_kld
    assert schedules.kl_weight_at(2500, 5.0, 5000, start=0.0) == pytest.approx(2.5)
    assert schedules.vae_hyper_at(c, 0)["lam_kl"] == 0.0


@pytest.mark.parametrize("name", P.CHECK_PRESETS)
def test_check_presets_are_the_scripts_nets_shortened(name):
    c = P.get_preset(name).validate()
    # half the 2015 MNIST script's widths and rows, the paper's chain and guide
    assert (c.q_hidden, c.p_hidden, c.z_dim, c.dataset, c.steps) == ((500, 500), (500, 500), 32,
                                                                     "mnist", 6)
    assert (c.batch_size, c.batch_repeat, c.data_rows, c.guide_units, c.guide_pool) == (
        50, 5, 100, 300, 4)
    # every claim needs several evaluations before and after the fork
    assert c.score_chains >= 100 and c.eval_every * 5 <= c.pretrain_updates < c.total_updates


# ---- the 2015 guide penalty against numpy --------------------------------------------

def test_code2015_guide_penalty_matches_numpy_and_is_pool_times_vgsns():
    from vgsn.backend import T, function
    from vgsn.model.nets import MaxoutGuide
    rng = np.random.default_rng(0)
    g15 = MaxoutGuide(7, np.random.default_rng(1), units=5, pool=4, act_penalty="code2015")
    gv = MaxoutGuide(7, np.random.default_rng(1), units=5, pool=4)
    x = T.matrix("x", dtype="float32")
    X = rng.random((6, 7), dtype=np.float32)
    noise = g15.draw_noise(rng, 6)
    assert noise["bias_c"].shape == (6, 10) and g15.noise_names()[-1] == "bias_c"
    syms = g15.noise_vars()
    fns = {}
    for name, guide in (("15", g15), ("v", gv)):
        sv = {k: v for k, v in syms.items() if k in guide.noise_names()}
        _, pre, hidden = guide.apply(x, sv)
        fns[name] = function([x] + list(sv.values()), [guide.activation_penalty(pre, hidden, sv)]
                             + pre + hidden, on_unused_input="ignore")
    out15 = fns["15"](X, *[noise[k] for k in g15.noise_names()])
    outv = fns["v"](X, *[noise[k] for k in gv.noise_names()])
    pen15, pre, hidden = out15[0], out15[1:3], out15[3:5]
    # numpy: sum_l pool * mean(a_l^2) + mean(((h_L * m_L) W_c + 0.1 xi)^2)
    c = (hidden[-1] * noise["hid1"]) @ g15.classifier_W.get_value() + noise["bias_c"]
    expect = 4 * sum(np.mean(a.astype(np.float64) ** 2) for a in pre) + np.mean(c ** 2)
    assert pen15 == pytest.approx(expect, rel=1e-5)
    # the same guide weights (same seed, W_c drawn last): the first part is 4x vgsn's
    np.testing.assert_allclose(pre[0], outv[1], rtol=1e-6)
    assert outv[0] == pytest.approx(sum(np.mean(a.astype(np.float64) ** 2) for a in pre), rel=1e-5)
    assert pen15 - np.mean(c ** 2) == pytest.approx(4 * outv[0], rel=1e-5)
    assert g15.classifier_W not in g15.params
    with pytest.raises(ValueError, match="act_penalty"):
        MaxoutGuide(7, rng, act_penalty="pool")


# ---- evaluation rows, Fig. 4c, minibatches --------------------------------------------

def test_scatter_rows_are_random_distinct_and_averaged(tmp_path):
    data = SimpleNamespace(valid=np.arange(400 * 3, dtype=np.float32).reshape(400, 3),
                           test=np.zeros((50, 3), np.float32))
    c = replace(P.get_preset("mnist2-ork"), gpde_valid_rows=10, gpde_test_rows=10, bound_rows=10,
                iwll_rows=10, score_chains=20)
    sets = runeval.EvalSets(c, data)
    assert len(sets.scatter) == 150 and len(set(sets.scatter_idx)) == 150
    assert sets.scatter_idx.max() > 150          # random, not the first 150 rows
    np.testing.assert_array_equal(sets.scatter, data.valid[sets.scatter_idx])
    assert sets.iwll_bin is None                  # Gaussian model: no binarised IWLL
    (tmp_path / "evals").mkdir()

    class Fake:   # free_energy_terms returns row index + pass noise, kl 2 * that
        def __init__(self):
            self.calls = 0

        def free_energy_terms(self, X, rng=None):
            self.calls += 1
            n = X[:, 0] + rng.standard_normal(len(X))
            return n, 2 * n

        def posterior_kl(self, X):
            return np.ones((len(X), 4))
    m = Fake()
    snapshots.scatter(m, sets.scatter, tmp_path, "guided", 5, np.random.default_rng(0), 10,
                      figures=False, idx=sets.scatter_idx)
    d = np.load(tmp_path / "evals" / "scatter_guided_u0000005.npz")
    assert m.calls == 10 and d["nll"].shape == (150,) and d["passes"] == 10
    r = np.random.default_rng(0)
    expect = np.mean([sets.scatter[:, 0] + r.standard_normal(150) for _ in range(10)], axis=0)
    np.testing.assert_allclose(d["nll"], expect)
    np.testing.assert_allclose(d["kl"], 2 * expect)
    np.testing.assert_array_equal(d["idx"], sets.scatter_idx)


def test_distinct_rows_draws_no_repeats(tmp_path):
    c = replace(P.get_preset("tiny"), batch_size=200, distinct_rows=True)
    data, _ = rundata.load_data(c)
    counts = {}
    for distinct in (True, False):
        r = train.Run(replace(c, distinct_rows=distinct), tmp_path / f"run{distinct}", data,
                      quiet=True)
        r.data = SimpleNamespace(train=np.arange(1000)[:, None])   # row i holds i
        batches = [r._batch(200)[:, 0] for _ in range(30)]
        counts[distinct] = [len(set(b)) for b in batches]
    assert counts[True] == [200] * 30
    # with replacement (the 2015 code): 200 of 1000 repeat a row almost surely
    assert all(n < 200 for n in counts[False])


def test_tfd_fold_reaches_the_data_and_its_overlap_flag(tmp_path):
    _write_tfd(tmp_path / "TFD_48x48.mat", tfd_layout(), "mat")
    c = P.get_preset("tfd-quick")
    all_data, _ = rundata.load_data(replace(c, fallback_dataset=None), tmp_path)
    assert all_data.test_overlaps_train
    for k in ("0", "3"):
        held, _ = rundata.load_data(replace(c, fallback_dataset=None, tfd_fold=k), tmp_path)
        assert not held.test_overlaps_train and len(held.test) < len(all_data.test)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    report = train.run(P.get_preset("tiny"), out, quiet=True)
    return out, report


def test_eval_rows_carry_both_protocols_the_iwll_kinds_and_the_chain_scores(tiny_run):
    out, report = tiny_run
    with open(out / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == EVAL_COLUMNS
    final = {r["branch"]: r for r in rows if r["kind"] == "final"}
    assert set(final) == {"guided", "vae"}
    for r in rows:
        for k in ("gpde_paper_test", "gpde_paper_sigma", "gpde_paper_valid", "confidence_final",
                  "switch_rate_mean", "classes_visited_mean", "frechet_final", "prior_frechet"):
            assert np.isfinite(float(r[k])), k
        assert float(r["gpde_paper_sigma"]) in {0.1, 0.13, 0.15, 0.18, 0.2}
        assert r["test_overlaps_train"] == "False" and r["score_chains"] == "12"
        assert 0 <= float(r["switch_rate_mean"]) <= 1 and r["frechet_pca_final"] == ""
        # the collapse-aware scores: histogram distance, digit score, top class
        assert 0 <= float(r["class_tv_final"]) <= 1 and 0 <= float(r["class_tv_start"]) <= 1
        assert 1 - 1e-9 <= float(r["digit_score_final"]) <= 10 + 1e-9
        assert float(r["digit_score_test"]) > 5
        assert int(float(r["top_class_final"])) in range(10)
        assert 0.1 <= float(r["top_class_frac_final"]) <= 1
    for r in final.values():
        assert "random binarisation" in r["iwll_kind"]
        assert np.isfinite(float(r["iwll_bin_test"]))
    # the per-step arrays behind the figure, one file per evaluation and branch
    d = np.load(out / "evals" / "chainscores_guided_u0000080.npz")
    assert d["confidence"].shape == (5,) and np.isnan(d["switch_rate"][0])
    assert d["class_tv"].shape == d["digit_score"].shape == d["top_class_frac"].shape == (5,)
    assert d["class_tv"][-1] == pytest.approx(float(final["guided"]["class_tv_final"]))
    assert d["frechet"][-1] == pytest.approx(float(final["guided"]["frechet_final"]))
    assert (out / "figures" / "chainscores.png").read_bytes()[:4] == b"\x89PNG"
    text = report.read_text()
    for needle in ("GPDE, paper protocol (sigma on the test rows)", "IWLL binarised test (k)",
                   "sigma chosen from {0.1, 0.13, 0.15, 0.18, 0.2} on the same",
                   "## Chain scores (Fig. 3 measured)", "| guided | 0.",
                   "](figures/chainscores.png)", "random binarisation",
                   "about -85 to -90 nats", "class TV start -> final",
                   "digit score start -> final (test)", "a collapse onto one class"):
        assert needle in text, needle


def _fake_metrics(rows):
    return SimpleNamespace(select=lambda *kinds: [r for r in rows if r["kind"] in kinds])


def test_report_flags_tfd_fold_all_as_not_held_out(tmp_path):
    c = P.get_preset("tfd-ork")
    row = {"update": 1, "branch": "guided", "kind": "final", "gpde_test": 2000.0,
           "gpde_test_stderr": 5.0, "gpde_sigma": 0.1, "gpde_sigma_at_edge": False,
           "gpde_paper_test": 2010.0, "gpde_paper_test_stderr": 5.0, "gpde_paper_sigma": 0.1,
           "gpde_paper_sigma_at_edge": False, "bound_test": 1.0, "iwll_test": 2.0, "iwll_k": 1000,
           "iwll_kind": "log-density on R^D", "gpde_valid": 1.0}
    (tmp_path / "figures").mkdir()
    timing = dict.fromkeys(("compile_s", "pretrain_s", "fork_s", "eval_s", "final_eval_s",
                            "pretrain_updates", "fork_updates"), 0)
    counts = {"gpde_valid": 10, "gpde_test": 10, "bound_test": 10, "iwll": 10}
    for overlap, note in ((True, "12 of 12 test images are training images of other folds"),
                          (False, "")):
        data = SimpleNamespace(name="tfd", source="TFD", train=np.zeros((3, 4)),
                               valid=np.zeros((2, 4)), test=np.zeros((2, 4)), image_shape=(2, 2),
                               test_overlaps_train=overlap, note=note)
        text = write_report(tmp_path, c, data, None, _fake_metrics([row]), timing, counts, 1,
                            "x").read_text()
        assert ("this run is one." in text) is (not overlap)
        assert ("its numbers are not held out" in text) is overlap
        assert ("mean over fold=0..4" in text) is overlap
        assert "not comparable with binarised-MNIST numbers" in text
        assert "paper 2060 against this run's 2000.0 (vgsn's protocol) and 2010.0" in text
    code = write_report(tmp_path, P.code2015(c), data, None, _fake_metrics([row]), timing,
                        counts, 1, "x").read_text()
    assert "lam_kld_c" in code


# ---- the reproduction document ----------------------------------------------------------

def _run(final=None, evals=(), scatter=None, rows=()):
    return {"final": final or {}, "evals": list(evals), "scatter": scatter or {},
            "folder": None, "preset": "x", "rows": list(rows)}


def test_verdict_rules_on_constructed_numbers():
    clean = dict(confidence_final=0.9, frechet_final=10.0, classes_visited_mean=3.0,
                 class_tv_final=0.2, digit_score_final=6.0, top_class_frac_final=0.3)
    dirty = dict(confidence_final=0.6, frechet_final=30.0, classes_visited_mean=2.0,
                 class_tv_final=0.4, digit_score_final=4.0, top_class_frac_final=0.5)
    runs = {"check-mnist1": {1: _run({"guided": clean, "vae": dirty}),
                             2: _run({"guided": clean, "vae": dirty})}}
    v = {r["key"]: r for r in reproduce.verdicts(runs)}
    assert v["clean"]["verdict"] == "holds"
    assert v["gpde"]["verdict"] == "not testable here"       # no ORK / VAR runs
    runs["check-mnist1"][2] = _run({"guided": dirty, "vae": clean})
    assert reproduce.verdicts(runs)[0]["verdict"] == "does not hold at this scale"
    # Cleaner but collapsed: chains that never leave their class, a class histogram
    # further from the data's, a lower digit score, or one class holding half the
    # final states each fail the rule, however confident and close the chains are.
    for change in (dict(classes_visited_mean=1.0), dict(class_tv_final=0.5),
                   dict(digit_score_final=3.0), dict(top_class_frac_final=0.5)):
        runs = {"check-mnist1": {1: _run({"guided": dict(clean, **change), "vae": dirty})}}
        assert reproduce.verdicts(runs)[0]["verdict"] == "does not hold at this scale", change
    # A missing diversity score: not testable (a run scored before these scores existed)
    old = {k: v for k, v in clean.items() if k != "class_tv_final"}
    runs = {"check-mnist1": {1: _run({"guided": old, "vae": dirty})}}
    assert reproduce.verdicts(runs)[0]["verdict"] == "not testable here"

    def ev(u, g, b):
        return {"update": u, "gpde_valid": g, "bound_valid": b, "kind": "eval"}
    ork = _run({"guided": dict(gpde_test=250.0, prior_frechet=5.0, prior_confidence=0.9)},
               scatter={"guided": {"kl": 20.0, "nll": 80.0}})
    var_peaks = _run({"guided": dict(gpde_test=200.0, prior_frechet=9.0, prior_confidence=0.8)},
                     [ev(1, 100, -120), ev(2, 150, -110), ev(3, 120, -100)],
                     scatter={"guided": {"kl": 30.0, "nll": 70.0}})
    runs = {"check-ork": {1: ork}, "check-var": {1: var_peaks}}
    v = {r["key"]: r for r in reproduce.verdicts(runs)}
    assert [v[k]["verdict"] for k in ("gpde", "peak", "recognisable", "tradeoff")] == ["holds"] * 4
    # GPDE still rising at the end, or the bound falling after the peak: no
    for evals in ([ev(1, 100, -120), ev(2, 120, -110), ev(3, 150, -100)],
                  [ev(1, 100, -90), ev(2, 150, -100), ev(3, 120, -110)]):
        runs["check-var"][1] = _run(var_peaks["final"], evals, var_peaks["scatter"])
        assert {r["key"]: r for r in reproduce.verdicts(runs)}["peak"]["verdict"] == \
            "does not hold at this scale"
    runs["check-var"][1] = _run({"guided": dict(gpde_test=260.0, prior_frechet=4.0,
                                                prior_confidence=0.95)},
                                scatter={"guided": {"kl": 10.0, "nll": 90.0}})
    v = {r["key"]: r for r in reproduce.verdicts(runs)}
    assert [v[k]["verdict"] for k in ("gpde", "recognisable", "tradeoff")] == \
        ["does not hold at this scale"] * 3


def test_fig3_trajectory_and_referee_tables(tmp_path):
    def row(u, branch, kind, tv, top, share, **kw):
        return dict(update=u, branch=branch, kind=kind, class_tv_final=tv, top_class_final=top,
                    top_class_frac_final=share, digit_score_final=5.0, frechet_final=40.0, **kw)
    rows = [row(100, "pretrain", "eval", 0.5, 2, 0.36),
            dict(update=150, branch="guided", kind="train", guide_acc=0.6),
            dict(update=190, branch="guided", kind="train", guide_acc=0.7),
            row(200, "guided", "final", 0.3, 1, 0.56), row(200, "vae", "final", 0.4, 8, 0.5)]
    lines = fig3.trajectory_lines({"check-mnist1": {3: _run(rows=rows)}})
    assert "| 3 | 100 | 0.500 | 5.00 | 2 (36%) | 40.0 | 0.500 | 5.00 | 2 (36%) | 40.0 | - |" \
        in lines
    assert "| 3 | 200 | 0.300 | 5.00 | 1 (56%) | 40.0 | 0.400 | 5.00 | 8 (50%) | 40.0 | 0.650 |" \
        in lines
    summary = dict(confidence_final=0.9, frechet_final=50.0, class_tv_final=0.25,
                   digit_score_final=6.5, classes_visited_mean=4.2, switch_rate_mean=0.2,
                   top_class_final=7, top_class_frac_final=0.21)
    for name in ("code2015_s2_u1500", "vgsn_s2_u1500", "code2015_s1_u0500", "notes"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"summary": summary}))
    table = fig3.referee_lines(tmp_path)
    assert table[2:5] == [
        "| 1 | 500 | code2015 | 0.900 | 50.0 | 0.250 | 6.50 | 4.20 | 0.200 | 7 (21%) |",
        "| 2 | 1,500 | code2015 | 0.900 | 50.0 | 0.250 | 6.50 | 4.20 | 0.200 | 7 (21%) |",
        "| 2 | 1,500 | vgsn | 0.900 | 50.0 | 0.250 | 6.50 | 4.20 | 0.200 | 7 (21%) |"]
    assert len(table) == 6 and fig3.referee_lines(tmp_path / "none") == []
    # which of the rule's conditions fail, per seed
    g = dict(confidence_final=0.85, frechet_final=45.0, classes_visited_mean=4.3,
             class_tv_final=0.28, digit_score_final=5.7, top_class_frac_final=0.22)
    v = dict(g, confidence_final=0.95, frechet_final=115.0, class_tv_final=0.69,
             digit_score_final=2.5, top_class_frac_final=0.61, classes_visited_mean=4.0)
    lines = fig3.condition_lines({"check-mnist1": {2: _run({"guided": g, "vae": v}),
                                                   1: _run({"guided": g, "vae": g})}})
    assert lines[0].startswith("- seed 1: fails on Frechet lower, confidence higher; holds on")
    assert lines[1].startswith("- seed 2: fails on confidence higher; holds on Frechet lower")


def test_document_from_constructed_run_folders(tmp_path):
    out = tmp_path / "runs"
    for role, seed, gpde in (("check-ork", 1, 250.0), ("check-var", 1, 200.0),
                             ("check-ork", 2, 240.0), ("check-var", 2, 245.0)):
        f = out / f"{role}-s{seed}"
        (f / "figures").mkdir(parents=True)
        (f / "evals").mkdir()
        (f / "config.json").write_text(json.dumps({"name": role}))
        (f / "report.md").write_text("done")
        (f / "figures" / "curves.png").write_bytes(b"\x89PNG fake")
        row = {"update": 10, "branch": "guided", "kind": "final", "gpde_test": gpde}
        (f / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    (out / "check-var-s3").mkdir()                      # unfinished: ignored
    assert reproduce.status(out / "check-var-s3") == "empty"
    doc, rows = reproduce.write_document(out, tmp_path / "docs" / "reproduction.md", "cmd")
    text = doc.read_text()
    v = {r["key"]: r for r in rows}
    assert v["gpde"]["verdict"] == "does not hold at this scale"
    assert "**does not hold at this scale (1 of 2 seeds)**" in text
    assert "ORK GPDE 245 +- 7.07 (s1: 250, s2: 240)" in text
    assert "**not testable here**" in text                # no mnist1 runs
    assert (tmp_path / "docs" / "reproduction_figures" / "check-ork_curves.png").exists()
    assert "](reproduction_figures/check-ork_curves.png)" in text


def test_the_tfd_scripts_switch_at_the_fork_runs_end_to_end(tmp_path):
    # code2015 for TFD in miniature: Bernoulli pre-training, then a Gaussian chain with
    # other z samples per row, chain momentum and the 2015 guide penalty.
    c = replace(P.get_preset("tiny"), pretrain_x_type="bernoulli", x_type="gaussian",
                pretrain_batch_repeat=3, chain_momentum=0.9, guide_act_penalty="code2015",
                kl_warmup_from=0.0, vae_branch=False, figures=False, score_chains=0,
                iwll_binarized=False, pretrain_updates=20, chain_updates=10)
    train.run(c, tmp_path / "run", quiet=True)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if r["kind"] == "final"]
    assert [r["branch"] for r in final] == ["guided"] and np.isfinite(final[0]["gpde_test"])
    assert "log-density on R^D" in final[0]["iwll_kind"] and final[0]["score_chains"] is None
    m = train.load_models(tmp_path / "run")["model"]
    assert m.x_type == "gaussian" and m.batch_repeat == c.batch_repeat == 2


def test_cli_options_reach_the_preset():
    from vgsn.run import cli
    p = cli.build_parser("tfd")
    c = cli.config_from_args(p.parse_args(["--preset", "tfd-ork", "--fold", "3", "--gpde-protocol",
                                           "paper", "--distinct-rows"]), p, "tfd")
    assert (c.tfd_fold, c.gpde_protocol, c.distinct_rows) == ("3", "paper", True)
    p = cli.build_parser("mnist")
    c = cli.config_from_args(p.parse_args(["--preset", "check-var"]), p, "mnist")
    assert (c.tfd_fold, c.gpde_protocol, c.distinct_rows, c.paper_sigmas) == \
        ("all", "both", False, "mnist-var")
    with pytest.raises(SystemExit):
        p.parse_args(["--preset", "mnist1", "--fold", "2"])     # TFD only
