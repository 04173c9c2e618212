#!/usr/bin/env python3
"""Write a vgsn run's pre-trained q and p as 2015 InfNet files (walk2015.py's --q / --p).

The referee run must start from the same networks as vgsn's guided branch: the
pre-trained model at the fork, ``RUN/pretrained.h5`` (or any checkpoint file).

Example::

    .venv-3.13/bin/python tools/ref2015/export_start.py runs/check-mnist1-s1/pretrained.h5 \\
        --out /work/ext/ref2015/s1/start
    # writes /work/ext/ref2015/s1/start_IN.pkl and start_GN.pkl
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

try:
    from vgsn.compat2015.convert import export_2015_model
except ImportError:
    from vgsn.orig2015 import export_2015_model
try:
    from vgsn.run.train import load_models
except ImportError:
    from vgsn.train import load_models


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a vgsn run folder or checkpoint file (e.g. RUN/pretrained.h5)")
    p.add_argument("--out", required=True, help="path prefix: writes PREFIX_IN.pkl and PREFIX_GN.pkl")
    p.add_argument("--branch", default="model", help="which model of the checkpoint (model | vae)")
    a = p.parse_args(argv)
    models = load_models(a.checkpoint)
    if a.branch not in models:
        p.error(f"{a.checkpoint} holds {sorted(models)}, not {a.branch!r}")
    model = models[a.branch]
    folder = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(folder, exist_ok=True)
    q, pp = export_2015_model(model, a.out + "_IN.pkl", a.out + "_GN.pkl")
    print(f"q {q}\np {pp}\n(x_type {model.x_type}, z {model.z_dim}, "
          f"q hidden {model.config['q_hidden']}, p hidden {model.config['p_hidden']})")


if __name__ == "__main__":
    main()
