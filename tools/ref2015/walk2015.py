#!/usr/bin/env python2.7
# -*- coding: utf-8 -*-
# ruff: noqa: UP009, UP010, UP030, UP032, SIM115, SIM117, C408  (Python 2.7: no f-strings)
"""Run the 2015 code's guided ("walk") phase as a referee for vgsn (Fig. 3).

Python 2.7 + Theano 1.0.5. This file is vgsn's own code: it imports the 2015
author code (Philip-Bachman/ICML-2015, commit f1bf969) from a folder outside this
repository and never edits it. See tools/ref2015/README.md for the setup.

What it runs: ``train_walk_from_pretrained_osm`` of ``MnistWalkoutTest.py``
(l. 243-389) with the scale taken from the command line. Everything else is the
script's:

- the 2015 ``VCGLoop`` (6-step walkout chain, ``cost_decay`` 0.0 = only step 0
  carries the VAE cost, ``lam_l2d`` 0.05, Bernoulli x, ``xt_transform`` sigmoid,
  ``logvar_bound`` 6) on q and p loaded with ``load_infnet_from_file``;
- the guide built as the script builds it: ``PeaNet`` proto-net
  ``[784, (300, 4), (300, 4), 10]``, one spawn net (input noise 0, bias noise 0.1,
  dropout), ``init_scale`` 0.75, ``lam_l2a`` 0.01, ``vis_drop`` 0.2, ``hid_drop`` 0.5,
  ``init_biases(0.0)``; the VCGLoop adds its own output unit ``20 tanh(a/20)``;
- per update: ``set_all_sgd_params(lr * scale, mom_1=0.5, mom_2=0.99)`` with
  ``scale = min(i + 1, warmup) / warmup``, cost weights 25 / 25,
  ``lam_chain_nll`` 1, ``lam_chain_kld`` = ``--lam-kld``; the VCGLoop's own L2
  weight 1e-4 (the script never changes it); ``batch`` chain starts drawn with
  replacement from the 50,000 training images (``npr.randint``), each repeated
  ``batch_reps`` times; ``data_rows`` training images (again with replacement) for
  the guide's data side;
- the learning rate never decays: the script's test ``(i+1 % 25000) == 0`` is
  ``i + 1 == 0`` and never holds (l. 328).

Left out: the script's image dumps every 1,000 updates (they also draw from the
global numpy generator, so the minibatch stream after update 1,000 differs from an
original run's; the two could never agree bit for bit anyway, see below).

The one patch: the 2015 modules import ``theano.sandbox.cuda.rng_curand``, which
does not exist without the old CUDA backend. Before importing them this script puts
a stand-in module into ``sys.modules`` whose ``CURAND_RandomStreams`` is Theano's
``MRG_RandomStreams`` (same interface, a different generator: the noise differs from
a GPU run of 2015, its distribution does not).

Seeding: the script's ``RandomState(1234)`` becomes ``RandomState(--seed)``; the
script never seeded the global ``numpy.random`` (minibatches, orthogonal init of a
fresh guide); here it is seeded with ``--seed`` too, so a run is repeatable.
"""
from __future__ import division, print_function

import argparse
import gzip
import json
import os
import shutil
import struct
import sys
import time
import types

DEFAULT_CODE = os.environ.get("ICML2015_DIR", "/work/ext/ICML-2015")
DEFAULT_COMPILEDIR = os.environ.get("REF2015_COMPILEDIR", "/work/ext/theano_compile")
DEFAULT_MNIST = "/work/shared/data/mnist"

# The settings of MnistWalkoutTest.py's walk phase that are not on the command line.
SCRIPT = {
    "chain_type": "walkout",          # l. 305
    "cost_decay": 0.0,                # l. 304: only step 0 carries the VAE cost
    "lam_l2d": 5e-2,                  # l. 306
    "x_type": "bernoulli",            # l. 301
    "xt_transform": "sigmoid",        # l. 302
    "logvar_bound": 6.0,              # l. 26, 303
    "mom_1": 0.5, "mom_2": 0.99,      # l. 335 (mom_2 is unused by get_param_updates)
    "dweight_gn": 25.0, "dweight_dn": 25.0,   # l. 336
    "lam_chain_nll": 1.0,             # l. 337
    "lam_l2w": 1e-4,                  # VCGLoop.py l. 205 (the script never sets it)
    "max_grad_norm": 10.0,            # VCGLoop.py l. 290-298
    "guide_proto_config": "[784, (300, 4), (300, 4), 10]",   # l. 269
    "guide_spawn_config": {"proto_key": 0, "input_noise": 0.0, "bias_noise": 0.1,
                           "do_dropout": True},              # l. 272
    "guide_init_scale": 0.75, "guide_lam_l2a": 1e-2,         # l. 277-278
    "guide_vis_drop": 0.2, "guide_hid_drop": 0.5,            # l. 279-280
    "guide_init_biases": 0.0,                                # l. 283
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Run the 2015 code's guided 6-step walkout chain training "
                    "(MnistWalkoutTest.py's walk phase) from a q/p pair saved in the 2015 "
                    "InfNet format, at the scale given here. Every update's costs go to "
                    "OUT/walk2015_log.jsonl; q and p (and the guide) are saved with the 2015 "
                    "save_to_file at --save-at updates and at the end.",
        epilog="Defaults are the 2015 script's (50,000 updates, 100 x 5 chain rows, 200 data "
               "rows, lr 4e-4 with a 5,000-update linear warm-up, lam_kld 1.2 = the "
               "script's active __main__ line). The guide: by DEFAULT a fresh PeaNet built "
               "exactly as the script builds it (the 2015 walk phase never loads a guide); "
               "--guide FILE starts its maxout layers from a PeaNet file instead (its output "
               "unit is always drawn fresh, as the 2015 VCGLoop does, unless --guide-out). "
               "Fixed as in the script: walkout, cost_decay 0 (only step 0 carries the VAE "
               "cost), cost weights 25/25, lam_l2d 0.05, guide lam_l2a 0.01, L2 1e-4 on every "
               "q/p parameter, momentum 0.5, per-tensor gradient clip 10, no lr decay (the "
               "script's decay test never fires). Run with Python 2.7 and Theano 1.0.5; see "
               "tools/ref2015/README.md.")
    p.add_argument("--q", required=True, help="q(z|x) InfNet file (2015 layout; .gz is unpacked)")
    p.add_argument("--p", required=True, help="p(x|z) InfNet file (2015 layout; .gz is unpacked)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--mnist", default=DEFAULT_MNIST,
                   help="folder with train-images-idx3-ubyte.gz (default %(default)s)")
    p.add_argument("--divide-by", type=float, default=256.0,
                   help="IDX grey levels are divided by this: 256 reproduces mnist.pkl.gz, "
                        "which the 2015 code read (default %(default)s)")
    p.add_argument("--updates", type=int, default=50000, help="updates (script: 50000)")
    p.add_argument("--batch", type=int, default=100,
                   help="chain starts per update, drawn with replacement (script: 100)")
    p.add_argument("--batch-reps", type=int, default=5,
                   help="times each chain start is repeated (script: 5)")
    p.add_argument("--data-rows", type=int, default=None,
                   help="training images shown to the guide per update (script: 2 * batch)")
    p.add_argument("--lr", type=float, default=4e-4, help="learning rate (script: 4e-4)")
    p.add_argument("--warmup", type=int, default=5000,
                   help="linear warm-up: update i (0-based) uses lr * min(i+1, W) / W; 0: none "
                        "(script: 5000)")
    p.add_argument("--lam-kld", type=float, default=1.2,
                   help="lam_chain_kld, the KL weight of the chain's VAE cost (script: the "
                        "pre-training lam_kld, 1.2 on its active line; vgsn's check-mnist1: 1.0)")
    p.add_argument("--steps", type=int, default=6, help="chain_len (script: 6)")
    p.add_argument("--seed", type=int, default=1234, help="seed (script: RandomState(1234))")
    p.add_argument("--guide", default=None,
                   help="start the guide's maxout layers from this PeaNet file "
                        "(vgsn.compat2015.convert.export_2015_guide); default: a fresh guide")
    p.add_argument("--guide-out", default=None,
                   help="start the guide's output unit from this file (a guide_*_out.pkl "
                        "written by this script); default: fresh, N(0,1) * 0.75")
    p.add_argument("--save-at", type=int, nargs="*", default=[],
                   help="also save q, p and the guide after these many updates")
    p.add_argument("--print-every", type=int, default=10,
                   help="print a line every N updates (default %(default)s)")
    p.add_argument("--code", default=DEFAULT_CODE,
                   help="folder holding the 2015 code (default %(default)s, or $ICML2015_DIR)")
    a = p.parse_args(argv)
    if a.data_rows is None:
        a.data_rows = 2 * a.batch
    for name in ("updates", "batch", "batch_reps", "data_rows", "steps"):
        if getattr(a, name) < 1:
            p.error("--{0} must be >= 1".format(name.replace("_", "-")))
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    return a


# --------------------------------------------------------------------------- setup

def set_theano_flags():
    """floatX float32 on the CPU, compile dir outside the repository, unless the
    caller's THEANO_FLAGS already says otherwise."""
    flags = os.environ.get("THEANO_FLAGS", "")
    have = {f.split("=")[0].strip() for f in flags.split(",") if "=" in f}
    extra = []
    if "floatX" not in have:
        extra.append("floatX=float32")
    if "device" not in have:
        extra.append("device=cpu")
    if "base_compiledir" not in have and "compiledir" not in have:
        extra.append("base_compiledir=" + DEFAULT_COMPILEDIR)
    os.environ["THEANO_FLAGS"] = ",".join([f for f in [flags] + extra if f])


def install_curand_standin():
    """The one patch: theano.sandbox.cuda.rng_curand -> MRG_RandomStreams."""
    import theano  # noqa: F401
    from theano.sandbox.rng_mrg import MRG_RandomStreams

    class CURAND_RandomStreams(MRG_RandomStreams):
        """MRG_RandomStreams under the CURAND name (seed 0 is invalid for MRG: 1)."""

        def __init__(self, seed):
            seed = int(seed)
            MRG_RandomStreams.__init__(self, seed if seed != 0 else 1)

    cuda = types.ModuleType("theano.sandbox.cuda")
    cuda.__path__ = []
    curand = types.ModuleType("theano.sandbox.cuda.rng_curand")
    curand.CURAND_RandomStreams = CURAND_RandomStreams
    cuda.rng_curand = curand
    sys.modules["theano.sandbox.cuda"] = cuda
    sys.modules["theano.sandbox.cuda.rng_curand"] = curand


def raise_limits():
    """As MnistWalkoutTest.py l. 17-18 (Theano recurses deeply on the unrolled graph)."""
    import resource
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
        want = 2 ** 29
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_STACK, (want, hard))
    except (ValueError, OSError):
        pass
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100000))


def read_mnist_train(folder, divide_by):
    """The first 50,000 IDX training images, (50000, 784) float32 (mnist.pkl.gz's train)."""
    import numpy as np
    path = os.path.join(folder, "train-images-idx3-ubyte.gz")
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        raise ValueError("{0}: not an IDX image file (magic {1})".format(path, magic))
    X = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows * cols)
    return (X[:50000].astype(np.float32) / np.float32(divide_by)).astype(np.float32)


def plain_copy(path, out_dir, name):
    """The 2015 loaders open files uncompressed: unpack a .gz into out_dir."""
    if not path.endswith(".gz"):
        return path
    dest = os.path.join(out_dir, name)
    with gzip.open(path, "rb") as src:
        with open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return dest


# --------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    set_theano_flags()
    raise_limits()
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    sys.path.insert(0, os.path.abspath(args.code))
    install_curand_standin()

    import cPickle
    import numpy as np
    import numpy.random as npr
    import theano
    import theano.tensor as T
    from InfNet import load_infnet_from_file
    from PeaNet import PeaNet, load_peanet_from_file
    from VCGLoop import VCGLoop

    print("theano {0}, floatX {1}, device {2}, compiledir {3}".format(
        theano.__version__, theano.config.floatX, theano.config.device,
        theano.config.compiledir))
    t_start = time.time()
    rng = np.random.RandomState(args.seed)
    npr.seed(args.seed)

    Xtr = read_mnist_train(args.mnist, args.divide_by)
    tr_samples, data_dim = Xtr.shape
    print("Xtr.shape: {0}".format(Xtr.shape))

    # Symbolic inputs (MnistWalkoutTest.py l. 261-264)
    Xd = T.matrix(name='Xd')
    Xc = T.matrix(name='Xc')
    Xm = T.matrix(name='Xm')
    Xt = T.matrix(name='Xt')

    # The guide (l. 266-283), or one loaded from a PeaNet file.
    if args.guide is None:
        dn_params = {}
        pc0 = [data_dim, (300, 4), (300, 4), 10]
        dn_params['proto_configs'] = [pc0]
        sc0 = dict(SCRIPT["guide_spawn_config"])
        dn_params['spawn_configs'] = [sc0]
        dn_params['spawn_weights'] = [1.0]
        dn_params['init_scale'] = SCRIPT["guide_init_scale"]
        dn_params['lam_l2a'] = SCRIPT["guide_lam_l2a"]
        dn_params['vis_drop'] = SCRIPT["guide_vis_drop"]
        dn_params['hid_drop'] = SCRIPT["guide_hid_drop"]
        DN = PeaNet(rng=rng, Xd=Xd, params=dn_params)
        DN.init_biases(SCRIPT["guide_init_biases"])
    else:
        guide_file = plain_copy(args.guide, args.out, "input_guide_DN.pkl")
        DN = load_peanet_from_file(f_name=guide_file, rng=rng, Xd=Xd)

    # q and p (l. 288-291)
    q_file = plain_copy(args.q, args.out, "input_IN.pkl")
    p_file = plain_copy(args.p, args.out, "input_GN.pkl")
    IN = load_infnet_from_file(f_name=q_file, rng=rng, Xd=Xd)
    GN = load_infnet_from_file(f_name=p_file, rng=rng, Xd=Xd)
    prior_dim = IN.mu_layers[-1].out_dim
    if GN.shared_layers[0].in_dim != prior_dim or IN.shared_layers[0].in_dim != data_dim:
        raise SystemExit("q ({0} -> {1}) and p ({2} -> ...) do not fit MNIST and each other".format(
            IN.shared_layers[0].in_dim, prior_dim, GN.shared_layers[0].in_dim))

    # The VCGLoop (l. 296-309)
    print("Building the VCGLoop...")
    vcgl_params = {}
    vcgl_params['x_type'] = SCRIPT["x_type"]
    vcgl_params['xt_transform'] = SCRIPT["xt_transform"]
    vcgl_params['logvar_bound'] = SCRIPT["logvar_bound"]
    vcgl_params['cost_decay'] = SCRIPT["cost_decay"]
    vcgl_params['chain_type'] = SCRIPT["chain_type"]
    vcgl_params['lam_l2d'] = SCRIPT["lam_l2d"]
    VCGL = VCGLoop(rng=rng, Xd=Xd, Xc=Xc, Xm=Xm, Xt=Xt,
                   i_net=IN, g_net=GN, d_net=DN, chain_len=args.steps,
                   data_dim=data_dim, prior_dim=prior_dim, params=vcgl_params)
    if args.guide_out is not None:
        with open(args.guide_out, "rb") as f:
            out_unit = cPickle.load(f)
        VCGL.disc_layers[0].W.set_value(out_unit['W'].astype(theano.config.floatX))
        VCGL.disc_layers[0].b.set_value(out_unit['b'].astype(theano.config.floatX))
    t_built = time.time()
    print("built and compiled in {0:.1f} s".format(t_built - t_start))

    config = dict(vars(args))
    config.update(script=SCRIPT, prior_dim=int(prior_dim), data_dim=int(data_dim),
                  guide_start="fresh" if args.guide is None else args.guide,
                  theano=theano.__version__, floatX=theano.config.floatX,
                  compile_seconds=round(t_built - t_start, 1),
                  curand_standin="theano.sandbox.rng_mrg.MRG_RandomStreams")
    with open(os.path.join(args.out, "walk2015_config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)

    def save(tag):
        IN.save_to_file(f_name=os.path.join(args.out, "walk_{0}_IN.pkl".format(tag)))
        GN.save_to_file(f_name=os.path.join(args.out, "walk_{0}_GN.pkl".format(tag)))
        DN.save_to_file(f_name=os.path.join(args.out, "walk_{0}_DN.pkl".format(tag)))
        dl = VCGL.disc_layers[0]
        with open(os.path.join(args.out, "walk_{0}_DNout.pkl".format(tag)), "wb") as f:
            cPickle.dump({'W': dl.W.get_value(), 'b': dl.b.get_value()}, f, protocol=2)

    save_at = set(args.save_at)
    names = ["joint_cost", "chain_nll_cost", "chain_kld_cost", "chain_nll_cost_dup",
             "chain_kld_cost_dup", "disc_cost_gn", "disc_cost_dn", "other_reg_cost"]
    log = open(os.path.join(args.out, "walk2015_log.jsonl"), "w")
    learn_rate = args.lr
    block, times, cpus = [], [], []
    # Train the VCGLoop (l. 322-352)
    for i in range(args.updates):
        t0, c0 = time.time(), sum(os.times()[:2])
        scale = 1.0 if args.warmup == 0 else float(min(i + 1, args.warmup)) / args.warmup
        VCGL.set_all_sgd_params(learn_rate=(scale * learn_rate),
                                mom_1=SCRIPT["mom_1"], mom_2=SCRIPT["mom_2"])
        VCGL.set_disc_weights(dweight_gn=SCRIPT["dweight_gn"], dweight_dn=SCRIPT["dweight_dn"])
        VCGL.set_lam_chain_nll(SCRIPT["lam_chain_nll"])
        VCGL.set_lam_chain_kld(args.lam_kld)
        tr_idx = npr.randint(low=0, high=tr_samples, size=(args.batch,))
        Xd_batch = Xtr.take(tr_idx, axis=0)
        Xc_batch = 0.0 * Xd_batch
        Xm_batch = 0.0 * Xd_batch
        tr_idx = npr.randint(low=0, high=tr_samples, size=(args.data_rows,))
        Xt_batch = Xtr.take(tr_idx, axis=0)
        outputs = VCGL.train_joint(Xd_batch, Xc_batch, Xm_batch, Xt_batch, args.batch_reps)
        dt, cpu = time.time() - t0, sum(os.times()[:2]) - c0
        row = {n: float(np.asarray(v).ravel()[0]) for n, v in zip(names, outputs)}
        for n in ("chain_nll_cost_dup", "chain_kld_cost_dup"):
            del row[n]
        # vgsn-comparable figures: L_g unweighted, the 2015 guide loss unweighted
        # (0.5 softplus(-2f) on data + 0.5 softplus(2f) on chain rows), step-0 KL.
        row["gen_loss"] = row["disc_cost_gn"] / SCRIPT["dweight_gn"]
        row["guide_loss_2015"] = row["disc_cost_dn"] / SCRIPT["dweight_dn"]
        row["kl_first"] = row["chain_kld_cost"] / args.lam_kld if args.lam_kld else None
        row["nll_first"] = row["chain_nll_cost"]
        row.update(update=i + 1, lr=scale * learn_rate, seconds=round(dt, 4),
                   cpu_seconds=round(cpu, 4))
        log.write(json.dumps(row, sort_keys=True) + "\n")
        log.flush()
        block.append(dt)
        times.append(dt)
        cpus.append(cpu)
        if not np.isfinite(row["joint_cost"]):
            print("update {0}: joint_cost is not finite, stopping".format(i + 1))
            break
        if (i + 1) % args.print_every == 0 or i == 0 or i + 1 == args.updates:
            print("update {0:d}: joint {1:.3f}  nll {2:.3f}  kld {3:.3f}  gen {4:.4f}  "
                  "guide {5:.4f}  reg {6:.4f}  lr {7:.2e}  {8:.3f} s/update".format(
                      i + 1, row["joint_cost"], row["chain_nll_cost"], row["chain_kld_cost"],
                      row["disc_cost_gn"], row["disc_cost_dn"], row["other_reg_cost"],
                      row["lr"], sum(block) / len(block)))
            sys.stdout.flush()
            block = []
        if (i + 1) in save_at:
            save("b{0:d}".format(i + 1))
    log.close()
    save("final")
    steady = times[1:] if len(times) > 1 else times
    steady_cpu = cpus[1:] if len(cpus) > 1 else cpus
    summary = dict(updates_done=len(times), seconds_total=round(sum(times), 2),
                   seconds_per_update_mean=round(sum(steady) / len(steady), 4),
                   seconds_per_update_median=round(sorted(steady)[len(steady) // 2], 4),
                   cpu_seconds_per_update_mean=round(sum(steady_cpu) / len(steady_cpu), 4),
                   compile_seconds=round(t_built - t_start, 1))
    with open(os.path.join(args.out, "walk2015_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    print("done: {0} updates, {1:.4f} s/update wall (mean after the first; median {2:.4f}; "
          "CPU {3:.4f} s/update); compile {4:.1f} s; saved to {5}".format(
              summary["updates_done"], summary["seconds_per_update_mean"],
              summary["seconds_per_update_median"], summary["cpu_seconds_per_update_mean"],
              summary["compile_seconds"], args.out))


if __name__ == "__main__":
    main()
