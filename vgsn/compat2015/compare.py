"""Side by side with the 2015 code: vgsn's free-energy terms for a 2015 q/p pair.

Loads a q(z|x) / p(x|z) pair saved by the 2015 code's ``InfNet.save_to_file``
(plain or gzipped) and a set of images, and prints what vgsn computes for them:
-log p(x|z) and KL(q(z|x) || N(0, I)) with z = the posterior mean, and averaged
over sampled z (the 2015 ``OneStageModel.compute_fe_terms(X, sample_count)``
reports the sampled form, per row). Usage::

    python -m vgsn.compare --q pt_osm_params_b80000_IN.pkl --p pt_osm_params_b80000_GN.pkl \\
        --mnist data --split test --rows 2500 --samples 20
    python -m vgsn.compare --q q.pkl.gz --p p.pkl.gz --x-type gaussian --images faces.npy

``--images`` takes a ``.npy`` file of shape (rows, pixels) or (rows, h, w) with
values in [0, 1] (uint8 is divided by 255), or a ``.npz`` archive holding one such
array (or several, one named ``images``, ``x`` or ``X``; ``FILE.npz:KEY`` picks one).

The 2015 files do not record p's output model. Without ``--x-type`` it is inferred and
said on stderr: p's shared log-variance parameter (``sigma[0]['b'][0]``) still at its
initial 0 means it was never trained (Bernoulli), any other value a Gaussian pair.

``--save OUT.npz`` writes the per-row outputs (``nll_mean_z``, ``kl``, ``nll_sampled``);
``--ref REF.npz`` reads saved outputs under the same names (from ``--save``, or the
2015 code's ``compute_fe_terms`` saved so) and prints the largest difference of each.
"""
import argparse
import pickle
import sys
import zlib

import numpy as np


def _parser():
    ap = argparse.ArgumentParser(
        prog="python -m vgsn.compare",
        description="Load a 2015 q/p pair (InfNet pickles) and print vgsn's free-energy "
                    "terms for a set of images, with z = the posterior mean and sampled.")
    ap.add_argument("--q", required=True, help="2015 InfNet file of q(z|x) (plain or .gz)")
    ap.add_argument("--p", required=True, help="2015 InfNet file of p(x|z) (plain or .gz)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help=".npy file: (rows, pixels) or (rows, h, w) in [0, 1]")
    src.add_argument("--mnist", metavar="DIR",
                     help="MNIST folder (IDX files or mnist.pkl.gz; nothing is downloaded)")
    ap.add_argument("--split", choices=("train", "valid", "test"), default="test",
                    help="MNIST split (default test)")
    ap.add_argument("--x-type", choices=("bernoulli", "gaussian"), default=None,
                    help="output model the pair was trained with (the files do not say; "
                         "default: inferred from p's shared log-variance, and said)")
    ap.add_argument("--logvar-bound", type=float, default=6.0,
                    help="B of the Gaussian's shared log-variance B tanh(b/B) (default 6)")
    ap.add_argument("--rows", type=int, default=None, help="use the first ROWS images")
    ap.add_argument("--samples", type=int, default=10,
                    help="z samples per image for the sampled terms (default 10; 0 skips them)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the z samples")
    ap.add_argument("--show", type=int, default=5, help="per-image rows to print (default 5)")
    ap.add_argument("--save", metavar="OUT.npz", help="write the per-row outputs (.npz)")
    ap.add_argument("--ref", metavar="REF.npz",
                    help="saved outputs (nll_mean_z, kl, nll_sampled per row): print the "
                         "largest difference of each")
    return ap


class InputError(Exception):
    """An input that does not fit; ``main`` prints the one-line message (the file or
    value, what is wrong, the fix) and exits 2."""


def _images(args, x_dim):
    if args.images is not None:
        where = args.images
        X = _load_array(args.images, ("images", "x", "X"), "images")
        if X.ndim not in (2, 3):
            raise InputError(f"{where}: an array of shape {X.shape}, expected (rows, pixels) "
                             f"or (rows, h, w)")
        if X.dtype.kind not in "uifb":
            raise InputError(f"{where}: values of type {X.dtype}, expected numbers")
        if not X.size:
            raise InputError(f"{where}: holds no images (an array of shape {X.shape}). Fix: "
                             f"give a file with at least one image")
        if X.dtype == np.uint8:
            X = X / np.float32(255.0)
        X = np.asarray(X, np.float32).reshape(len(X), -1)
        if not np.all(np.isfinite(X)):
            raise InputError(f"{where}: {int(np.sum(~np.isfinite(X)))} values are NaN or "
                             f"infinite; images must be finite values in [0, 1]")
    else:
        from vgsn.data.datasets import load_mnist
        X = getattr(load_mnist(args.mnist, download=False), args.split)
        where = f"MNIST {args.split} ({args.mnist})"
    if X.shape[1] != x_dim:
        raise InputError(f"{where}: {X.shape[1]} pixels per image, but q expects {x_dim}. "
                         f"Fix: give images of {x_dim} pixels, or check --q and --p "
                         f"(swapped?)")
    if X.size and (X.min() < 0.0 or X.max() > 1.0):
        raise InputError(f"{where}: values outside [0, 1] (min {X.min():g}, max {X.max():g}). "
                         f"Fix: scale the images to [0, 1] (a uint8 file is divided by 255)")
    if args.rows is not None:
        X = X[:args.rows]
    if not len(X):
        raise InputError(f"{where}: holds no images. Fix: give a file with at least one image")
    return X, where


def _load_array(spec, names, what):
    """The array of a ``.npy`` file, or of a ``.npz`` archive (its only array, the
    first of ``names`` it holds, or ``FILE.npz:KEY``)."""
    path, key = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".npz") and tail:
        path, key = head, tail
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        kind = ".npz archive" if str(path).endswith(".npz") else ".npy file"
        raise InputError(f"{path}: not a readable {kind} "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                         ) from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        keys = list(data.files)
        if key is None:
            key = keys[0] if len(keys) == 1 else next((n for n in names if n in keys), None)
        if key not in keys:
            raise InputError(f"{path}: a .npz archive of {', '.join(keys) or 'no arrays'}; "
                             f"name the {what} array: {path}:KEY")
        try:
            return data[key]
        except (ValueError, OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}:{key}: not readable ({exc})") from None


def infer_x_type(p):
    """(x_type, reason) from a 2015 p file: a shared log-variance parameter still at
    its initial 0 was never trained (Bernoulli); any other value: Gaussian."""
    try:
        b = float(p.sigma[0]["b"][0])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return "bernoulli", "p's file holds no shared log-variance parameter"
    if b == 0.0:
        return "bernoulli", "p's shared log-variance parameter is at its initial 0 (untrained)"
    return "gaussian", f"p's shared log-variance parameter is {b:.6g}, not its initial 0"


def compare_to_ref(result, ref_path, say):
    """Print the largest |difference| of each output to the saved ones in ``ref_path``;
    returns {name: largest difference}."""
    try:
        with np.load(ref_path, allow_pickle=False) as ref:
            saved = {k: np.asarray(ref[k], np.float64) for k in ref.files}
    except (ValueError, OSError, EOFError, zlib.error, AttributeError) as exc:
        raise InputError(f"--ref {ref_path}: not a readable .npz of saved outputs ({exc})") from None
    common = [k for k in result if k in saved]
    if not common:
        raise InputError(f"--ref {ref_path}: holds {', '.join(saved) or 'nothing'}, none of "
                         f"{', '.join(result)}; save outputs under these names (--save)")
    out = {}
    say()
    say(f"against {ref_path}:")
    for k in common:
        a, b = np.asarray(result[k], np.float64), saved[k]
        if a.shape != b.shape:
            raise InputError(f"--ref {ref_path}: {k} has shape {b.shape}, this run {a.shape} "
                             f"(the same images and --rows?)")
        d = np.abs(a - b)
        i = int(np.argmax(d)) if d.size else 0
        out[k] = float(d.max()) if d.size else 0.0
        say(f"  {k}: largest difference {out[k]:.3g} (row {i}: {a.flat[i]:.6f} vs "
            f"{b.flat[i]:.6f}), mean {float(d.mean()) if d.size else 0.0:.3g}")
    return out


def compare(args, out=sys.stdout):
    """Run the comparison for parsed ``args``; returns a dict of the per-row arrays."""
    from vgsn.compat2015.convert import load_2015_model, read_2015_infnet

    def say(line=""):
        print(line, file=out)

    def read(path):
        try:
            return read_2015_infnet(path)
        except (zlib.error, EOFError) as exc:   # a damaged gzip stream, named
            raise InputError(f"{path}: corrupt or truncated gzip stream ({exc})") from None

    q, p = read(args.q), read(args.p)
    assumed = None
    if args.x_type is None:
        args.x_type, assumed = infer_x_type(p)
    model = load_2015_model(q, p, x_type=args.x_type, logvar_bound=args.logvar_bound)
    X, where = _images(args, model.x_dim)
    if assumed:          # once the inputs are good: a refusal stays one line
        other = "gaussian" if args.x_type == "bernoulli" else "bernoulli"
        print(f"python -m vgsn.compare: warning: the 2015 files do not record p's output "
              f"model; assumed {args.x_type} ({assumed}); give --x-type {other} if it was "
              f"{other}", file=sys.stderr)
    say(f"q: {q.summary()}")
    say(f"p: {p.summary()}")
    line = f"model: x_type {args.x_type}, x {model.x_dim}, z {model.z_dim}"
    if args.x_type == "gaussian":
        line += (f", shared log-variance {model.shared_logvar():.6f} = {args.logvar_bound:g} "
                 f"tanh(b / {args.logvar_bound:g}), b = {float(model.p.logvar_param.get_value()):.6f}")
    say(line)
    say(f"images: {len(X)} from {where}")
    result = {}
    nll, kl = model.free_energy_terms(X, use_mean=True)
    result["nll_mean_z"], result["kl"] = nll, kl
    columns = [("nll(z=mean)", nll), ("KL", kl), ("F(z=mean)", nll + kl)]
    if args.samples > 0:
        rng = np.random.default_rng(args.seed)
        nll_s, _ = model.free_energy_terms(X, n_samples=args.samples, rng=rng)
        result["nll_sampled"] = nll_s
        columns += [(f"nll({args.samples} z)", nll_s), (f"F({args.samples} z)", nll_s + kl)]
    width = max(14, max(len(name) for name, _ in columns) + 2)
    say()
    say("row".rjust(6) + "".join(name.rjust(width) for name, _ in columns))
    for i in range(min(args.show, len(X))):
        say(str(i).rjust(6) + "".join(f"{v[i]:{width}.4f}" for _, v in columns))
    say("mean".rjust(6) + "".join(f"{np.mean(v):{width}.4f}" for _, v in columns))
    if args.ref:
        result["ref_max_diff"] = compare_to_ref(
            {k: v for k, v in result.items() if isinstance(v, np.ndarray)}, args.ref, say)
    if args.save:
        np.savez(args.save, **{k: v for k, v in result.items() if isinstance(v, np.ndarray)})
        say(f"saved: {args.save}")
    return result


def main(argv=None, out=sys.stdout):
    """The command line: prints the comparison; a bad input is one line on stderr and
    exit status 2 (as every bad input of vgsn), an argparse usage error too."""
    args = _parser().parse_args(argv)
    try:
        for flag, value, least in (("--samples", args.samples, 0), ("--show", args.show, 0),
                                   ("--rows", args.rows, 1), ("--seed", args.seed, 0)):
            if value is not None and value < least:
                raise InputError(f"{flag} {value}: must be >= {least}. Fix: give {flag} "
                                 f"{least} or more")
        return compare(args, out=out)
    except InputError as exc:
        _refuse(str(exc))
    except (ValueError, OSError, EOFError, zlib.error, pickle.UnpicklingError) as exc:
        # files that do not fit (a 2015 file of the wrong layout, a broken MNIST file:
        # their messages name the file); one line, whatever the library's message was
        _refuse(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _refuse(message):
    print(f"python -m vgsn.compare: error: {message}", file=sys.stderr)
    raise SystemExit(2) from None
