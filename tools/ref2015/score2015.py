#!/usr/bin/env python3
"""Score a q/p pair saved in the 2015 format with vgsn's chain scores (Fig. 3 referee).

Loads the pair with vgsn's ``load_2015_model``, runs ``--chains`` chains of ``--steps``
steps from the first ``--chains`` MNIST test images (``model.run_chain(X0, steps,
rng=np.random.default_rng(seed))``), scores every state with vgsn's digit-classifier
chain scores (``chainscore.chain_scores`` against ``chainscore.reference`` of the whole
test set, as a vgsn run does) and writes:

- ``--out`` JSON: every scalar the score dict holds (whatever keys ``chain_scores``
  returns now or later), the per-step curves (confidence, switch rate, Frechet), the
  per-step class histograms (counts and frequencies), per-chain summaries (classes
  visited, first switch) and, with ``--prior-samples``, ``sample_scores`` of that many
  prior samples;
- ``--png``: a strip of the first ``--strip-chains`` chains (every ``--every``-th state).

Runs in vgsn's environment (``.venv-3.13/bin/python tools/ref2015/score2015.py ...``),
on both package layouts (before and after the move to sub-packages).

Example::

    .venv-3.13/bin/python tools/ref2015/score2015.py \\
        --q OUT/walk_final_IN.pkl --p OUT/walk_final_GN.pkl \\
        --data-dir /work/shared/data/mnist --out OUT/scores_final.json
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path:                 # run from anywhere: the checkout's vgsn
    sys.path.insert(0, REPO)

try:
    from vgsn.compat2015.convert import load_2015_model
except ImportError:
    from vgsn.orig2015 import load_2015_model
try:
    from vgsn.eval import chainscore as cs
except ImportError:
    from vgsn import chainscore as cs
try:
    from vgsn.eval.plots import chain_strip
except ImportError:
    from vgsn.plots import chain_strip
try:
    from vgsn.data.datasets import load_dataset
except ImportError:
    from vgsn.datasets import load_dataset


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Defaults follow vgsn's check-mnist1 preset "
                                       "(score_chains 300, score_steps 50).")
    p.add_argument("--q", required=True, help="q(z|x) file, 2015 InfNet layout")
    p.add_argument("--p", required=True, help="p(x|z) file, 2015 InfNet layout")
    p.add_argument("--data-dir", default="/work/shared/data/mnist",
                   help="MNIST folder (IDX .gz files; default %(default)s)")
    p.add_argument("--cache-dir", default=None,
                   help="where the digit classifier is cached (default: vgsn's)")
    p.add_argument("--x-type", default="bernoulli", choices=("bernoulli", "gaussian"))
    p.add_argument("--logvar-bound", type=float, default=6.0)
    p.add_argument("--chains", type=int, default=300, help="chains (from the first test images)")
    p.add_argument("--steps", type=int, default=50, help="steps per chain")
    p.add_argument("--seed", type=int, default=0, help="seed of run_chain's noise")
    p.add_argument("--sigma-scale", type=float, default=1.0)
    p.add_argument("--prior-samples", type=int, default=0,
                   help="also score this many prior samples (0: none)")
    p.add_argument("--out", required=True, help="JSON written here")
    p.add_argument("--png", default=None, help="chain strip PNG (default: OUT with .png)")
    p.add_argument("--strip-chains", type=int, default=8)
    p.add_argument("--every", type=int, default=1, help="strip shows every N-th state")
    p.add_argument("--scale", type=int, default=2, help="strip pixel scale")
    p.add_argument("--label", default=None, help="free text stored in the JSON")
    a = p.parse_args(argv)
    if a.chains < 2 or a.steps < 1:
        p.error("--chains must be >= 2 and --steps >= 1")
    if a.png is None:
        a.png = os.path.splitext(a.out)[0] + ".png"
    return a


def _scalar(v):
    """A JSON-able float/int for a 0-d value, else None."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) or (isinstance(v, np.ndarray) and v.ndim == 0):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    return None


def _jsonable(v):
    a = np.asarray(v)
    if a.dtype.kind in "iub":
        return a.tolist()
    return [None if not np.isfinite(x) else float(x) for x in a.ravel()] if a.ndim == 1 else \
        [_jsonable(r) for r in a]


def split_scores(scores):
    """(scalars, per-step arrays, per-chain arrays, other) of a score dict, generically:
    0-d values are scalars; 1-d arrays of length steps+1 are per step; of length
    chains are per chain; the rest (e.g. (steps+1, classes)) go to 'other'."""
    n_states, n_chains = int(scores["steps"]) + 1, int(scores["chains"])
    scalars, per_step, per_chain, other = {}, {}, {}, {}
    for k, v in scores.items():
        if v is None:
            scalars[k] = None
            continue
        if np.ndim(v) == 0:
            scalars[k] = _scalar(v) if not isinstance(v, str) else v
            continue
        a = np.asarray(v)
        if a.ndim == 1 and len(a) == n_states:
            per_step[k] = _jsonable(a)
        elif a.ndim == 1 and len(a) == n_chains:
            per_chain[k] = _jsonable(a)
        elif k != "classes":                       # (steps+1, chains): too big, summarised
            other[k] = _jsonable(a)
    return scalars, per_step, per_chain, other


def class_histograms(scores, n_classes):
    """Per step, the count of chains per predicted class, (steps+1, classes)."""
    classes = np.asarray(scores["classes"])
    return np.stack([np.bincount(c, minlength=n_classes) for c in classes]).tolist()


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    model = load_2015_model(args.q, args.p, x_type=args.x_type, logvar_bound=args.logvar_bound)
    data = load_dataset("mnist", args.data_dir)
    X_test = np.asarray(data.test, np.float32)
    X0 = X_test[:min(args.chains, len(X_test))]
    states = model.run_chain(X0, args.steps, sigma_scale=args.sigma_scale,
                             rng=np.random.default_rng(args.seed))
    scorer = cs.scorer_for("mnist", data_dir=args.data_dir, cache_dir=args.cache_dir)
    ref = cs.reference(scorer, X_test)
    scores = cs.chain_scores(scorer, states, ref)
    scalars, per_step, per_chain, other = split_scores(scores)
    result = {
        "q": os.path.abspath(args.q), "p": os.path.abspath(args.p), "label": args.label,
        "x_type": args.x_type, "seed": args.seed, "sigma_scale": args.sigma_scale,
        "chains": len(X0), "steps": int(args.steps),
        "summary": scalars,
        "per_step": per_step,
        "per_chain_summary": {k: {"mean": float(np.mean(v)), "min": float(np.min(v)),
                                  "max": float(np.max(v))} for k, v in per_chain.items()},
        "per_chain": per_chain,
        "other": other,
    }
    if getattr(scorer, "has_classes", False) and "classes" in scores:
        n_classes = getattr(scorer, "n_classes", 10)
        result["class_histograms"] = class_histograms(scores, n_classes)
        result["class_histogram_note"] = ("class_histograms[t][c]: chains whose state after t "
                                          "steps the classifier calls c (t = 0: the starts)")
    if args.prior_samples > 0:
        Xp = model.sample_prior(args.prior_samples, rng=np.random.default_rng(args.seed + 1))
        prior = cs.sample_scores(scorer, Xp, ref)
        result["prior"] = {k: (_scalar(v) if np.ndim(v) == 0 else _jsonable(v))
                           for k, v in prior.items()}
    meta = getattr(scorer, "meta", None)
    if isinstance(meta, dict):
        result["scorer"] = json.loads(json.dumps(meta, default=str))
    png = chain_strip(states[:, :min(args.strip_chains, states.shape[1])], (28, 28), args.png,
                      every=args.every, scale=args.scale)
    result["png"] = os.path.abspath(str(png))
    result["seconds"] = round(time.time() - t0, 1)
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    keys = [k for k in ("confidence_test", "confidence_final", "switch_rate_mean",
                        "classes_visited_mean", "never_switched", "frechet_start",
                        "frechet_final", "frechet_mean") if k in scalars]
    print(" ".join(f"{k} {scalars[k]:.4g}" if isinstance(scalars[k], float) else f"{k} {scalars[k]}"
                   for k in keys))
    print(f"wrote {args.out} and {png} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
