#!/usr/bin/env python3
"""vgsn's side of the referee: the 2015 walk phase run by vgsn, from the same start files.

Takes the q/p pair ``walk2015.py`` starts from (2015 InfNet files, e.g. written by
``export_start.py``), builds vgsn's ``VCGLoop`` with the 2015 walk-phase settings
(``vgsn.load_2015_loop``'s: walkout, 6 steps, step 0's VAE cost only, weights 25 / 25,
the 2015 guide loss and activation penalty, L2 1e-4 on every q/p parameter, momentum
0.5, clipping at 10) and a fresh guide of the script's shape (300 x 4, two layers), and
trains it with the scale given here, the same options as ``walk2015.py`` (minibatches
drawn with replacement from the first 50,000 training images, grey levels / 256, a
linear warm-up ``min(i+1, W) / W``). q and p are saved in the 2015 layout at
``--save-at`` updates, so ``score2015.py`` scores both referees' chains alike; only the
code that trains differs (and the random streams).

Example::

    .venv-3.13/bin/python tools/ref2015/walk_vgsn.py \\
        --q START_IN.pkl --p START_GN.pkl --out OUT --updates 1500 --batch 50 \\
        --data-rows 100 --lr 1e-3 --warmup 50 --lam-kld 1.0 --seed 1 --save-at 500 1000 1500
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path:                 # run from anywhere: the checkout's vgsn
    sys.path.insert(0, REPO)

from vgsn import VCGLoop, load_2015_model  # noqa: E402
from vgsn.compat2015.convert import export_2015_model  # noqa: E402
from vgsn.data.datasets import load_dataset  # noqa: E402
from vgsn.model.nets import MaxoutGuide  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--q", required=True, help="q(z|x) InfNet file (2015 layout)")
    p.add_argument("--p", required=True, help="p(x|z) InfNet file (2015 layout)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--mnist", default="/work/shared/data/mnist", help="MNIST folder")
    p.add_argument("--updates", type=int, default=50000)
    p.add_argument("--batch", type=int, default=100, help="chain starts per update")
    p.add_argument("--batch-reps", type=int, default=5)
    p.add_argument("--data-rows", type=int, default=None, help="default 2 x --batch")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=5000)
    p.add_argument("--lam-kld", type=float, default=1.2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--guide-loss", default="code2015", choices=("code2015", "paper"))
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--save-at", type=int, nargs="*", default=[])
    p.add_argument("--print-every", type=int, default=50)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data_rows = 2 * args.batch if args.data_rows is None else args.data_rows
    X = load_dataset("mnist", args.mnist, divide_by=256.0, download=False).train
    X = np.asarray(X[:50000], np.float32)
    rng = np.random.default_rng([args.seed, 17])
    model = load_2015_model(args.q, args.p, x_type="bernoulli", lam_kl=args.lam_kld,
                            gamma_kl=0.0, l2=1e-4, l2_on="all", batch_repeat=args.batch_reps,
                            seed=args.seed)
    guide = MaxoutGuide(model.x_dim, np.random.default_rng([args.seed, 2]), units=300, pool=4,
                        act_penalty="code2015")
    loop = VCGLoop(model, guide, steps=args.steps, walkback=False, step_decay=0.0,
                   guide_loss=args.guide_loss, chain_gamma=False, lr_gen=args.lr,
                   lr_guide=args.lr, momentum=args.momentum, max_norm=10.0,
                   data_rows=data_rows, seed=args.seed)
    config = dict(vars(args), data_rows=data_rows, code="vgsn")
    with open(os.path.join(args.out, "walk_vgsn_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    log = open(os.path.join(args.out, "walk_vgsn_log.jsonl"), "w")
    save_at, t0 = set(args.save_at), time.time()
    for i in range(args.updates):
        scale = 1.0 if args.warmup == 0 else min(i + 1, args.warmup) / args.warmup
        loop.hyper.set(lr_gen=args.lr * scale, lr_guide=args.lr * scale)
        X0 = X[rng.integers(0, X.shape[0], args.batch)]
        Xd = X[rng.integers(0, X.shape[0], data_rows)]
        r = loop.train_step(X0, Xd)
        row = {k: v for k, v in r.items() if not isinstance(v, np.ndarray)}
        row.update(update=i + 1, lr=args.lr * scale, seconds=time.time() - t0)
        log.write(json.dumps(row) + "\n")
        if (i + 1) % args.print_every == 0:
            log.flush()
            print(f"update {i + 1}: gen_cost {r['gen_cost']:.2f} nll {r['nll_first']:.2f} "
                  f"kl {r['kl_first']:.2f} guide_loss {r['guide_loss']:.3f} "
                  f"acc {r['guide_acc']:.3f} {(time.time() - t0) / (i + 1):.3f} s/update",
                  flush=True)
        if (i + 1) in save_at or i + 1 == args.updates:
            tag = "final" if i + 1 == args.updates else f"b{i + 1}"
            for t in {tag, f"b{i + 1}"}:
                export_2015_model(model, os.path.join(args.out, f"walk_{t}_IN.pkl"),
                                  os.path.join(args.out, f"walk_{t}_GN.pkl"))
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
