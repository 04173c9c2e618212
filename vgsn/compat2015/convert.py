"""The 2015 author code's saved networks: read them into vgsn, write vgsn's out.

The file layout, its checks and the safe reading live in ``vgsn.compat2015.read``
(re-exported here); this module puts what it reads into vgsn's networks and writes
vgsn's networks back in the same layout.

How the pieces map onto vgsn
----------------------------
- InfNet ``shared`` layers -> ``InfNet.hidden_layers`` (ReLU), ``mu`` -> ``mean_head``,
  ``sigma`` -> ``logvar_head`` (q). For p, only ``sigma[0]['b'][0]`` takes part in
  the 2015 model: it is the shared Gaussian log-variance parameter, bounded as
  ``B * tanh(b / B)`` exactly like vgsn's ``p.logvar_param`` (same parameterisation,
  so the number is copied as is); the rest of p's sigma head is unused and dropped.
- ``b_in`` and ``s_in`` never took part in a forward pass (the line that used them is
  commented out in the 2015 ``HiddenLayer``): they are checked for shape and dropped.
- PeaNet: the maxout layers -> ``MaxoutGuide.layers``. The proto-net's last layer
  (a 10-way classifier) was bypassed by the 2015 chain training: only the 2015
  activation penalty saw it, so it becomes ``MaxoutGuide.classifier_W`` when the guide
  is loaded with ``act_penalty='code2015'`` (as ``load_2015_loop`` does) and is
  ignored otherwise; the guide's output unit ``f = 20 tanh(a / 20)`` was built by the
  2015 VCGLoop and never saved, so it starts fresh here (or is given).

Exporting
---------
``export_2015_*`` write vgsn's parameters in the same layout (Python-2 style
protocol-2 pickles, ``numpy.core`` names, float32), so ``load_infnet_from_file`` /
``load_peanet_from_file`` of the 2015 code read them. Slots vgsn does not have are
filled with what a freshly built 2015 net holds: ``b_in`` zeros, ``s_in``
0.541325 (softplus^-1(1), the 2015 init), ``sigma_scale`` 1, ``prior_sigma`` 1;
p's sigma head is zeros except ``b[0]`` = the shared log-variance parameter; the
guide's classifier layer is its ``classifier_W`` (zeros when it has none), bias zero.
A file name ending in ``.gz`` is gzipped (the
2015 code opens files uncompressed: gunzip it first).
"""
import gzip
import os

import numpy as np

from vgsn.data import safe_pickle
from vgsn.model.vae import OneStageModel
from vgsn.model.vcg import VCGLoop
from vgsn.model.options import X_TYPES
from vgsn.model.nets import MaxoutGuide
from vgsn.compat2015.read import (  # noqa: F401  (the readers are part of this module's API)
    PLACEHOLDERS, RELU, S_IN_INIT, Function2015, InfNetFile, Orig2015Error, PeaNetFile,
    read_2015_infnet, read_2015_peanet)
from vgsn.compat2015.read import _fail

__all__ = [
    "Orig2015Error", "Function2015", "InfNetFile", "PeaNetFile", "PLACEHOLDERS",
    "read_2015_infnet", "read_2015_peanet", "set_infnet_from_2015", "set_guide_from_2015",
    "load_2015_model", "load_2015_guide", "load_2015_loop",
    "export_2015_infnet", "export_2015_model", "export_2015_guide",
]


# =============================================================================
# Loading into vgsn networks
# =============================================================================

def _assign(path, where, var, value):
    current = var.get_value(borrow=True)
    value = np.asarray(value, dtype=current.dtype)
    if value.shape != current.shape:
        _fail(path, f"{where} has shape {value.shape} but vgsn's {var.name} is {current.shape}")
    var.set_value(value.copy())


def set_infnet_from_2015(net, netfile):
    """Copy a 2015 InfNet file's arrays into a vgsn ``InfNet`` of the same sizes.

    ``shared`` -> ``hidden_layers``, ``mu`` -> ``mean_head``; ``sigma`` -> ``logvar_head``
    for a q-like net (``logvar='head'``), ``sigma[0]['b'][0]`` -> ``logvar_param`` for a
    shared-log-variance p; a Bernoulli p (``logvar='none'``) ignores the sigma head.

    Parameters
    ----------
    net : vgsn.model.nets.InfNet
    netfile : InfNetFile or path

    Raises
    ------
    Orig2015Error
        The sizes differ (the message names the file and the entry).
    """
    f = netfile if isinstance(netfile, InfNetFile) else read_2015_infnet(netfile)
    if (net.n_in, list(net.hidden), net.n_out) != (f.n_in, list(f.hidden), f.n_out):
        _fail(f.path, f"the file's network {f.n_in} -> {f.hidden} -> {f.n_out} does not match "
                      f"vgsn's {net.name}: {net.n_in} -> {net.hidden} -> {net.n_out}")
    for i, (layer, src) in enumerate(zip(net.hidden_layers, f.shared)):
        _assign(f.path, f"['shared'][{i}]['W']", layer.W, src["W"])
        _assign(f.path, f"['shared'][{i}]['b']", layer.b, src["b"])
    _assign(f.path, "['mu'][0]['W']", net.mean_head.W, f.mu[0]["W"])
    _assign(f.path, "['mu'][0]['b']", net.mean_head.b, f.mu[0]["b"])
    if net.logvar_head is not None:
        _assign(f.path, "['sigma'][0]['W']", net.logvar_head.W, f.sigma[0]["W"])
        _assign(f.path, "['sigma'][0]['b']", net.logvar_head.b, f.sigma[0]["b"])
    elif net.logvar_param is not None:
        _assign(f.path, "['sigma'][0]['b'][0]", net.logvar_param, f.sigma[0]["b"][0])
    return net


def set_guide_from_2015(guide, peafile):
    """Copy a 2015 PeaNet file's maxout layers into a vgsn ``MaxoutGuide``.

    The guide's output unit is left as it is (the file has none).

    Raises
    ------
    Orig2015Error
        The sizes differ.
    """
    f = peafile if isinstance(peafile, PeaNetFile) else read_2015_peanet(peafile)
    ours = (guide.n_in, guide.units, guide.pool, len(guide.layers))
    if ours != (f.n_in, f.units, f.pool, f.n_layers):
        _fail(f.path, f"the file's guide (n_in {f.n_in}, {f.n_layers} x ({f.units}, {f.pool})) "
                      f"does not match vgsn's {guide.name} (n_in {ours[0]}, {ours[3]} x "
                      f"({ours[1]}, {ours[2]}))")
    for i, (layer, src) in enumerate(zip(guide.layers, f.layers)):
        _assign(f.path, f"layers[{i}]['W']", layer.W, src["W"])
        _assign(f.path, f"layers[{i}]['b']", layer.b, src["b"])
    return guide


def load_2015_model(q_file, p_file, x_type="bernoulli", logvar_bound=6.0, **model_options):
    """A ``OneStageModel`` built with the sizes of a 2015 q/p pair and holding its arrays.

    Parameters
    ----------
    q_file, p_file : path or InfNetFile
        The 2015 ``InfNet`` files of q(z|x) and p(x|z) (plain or gzipped).
    x_type : {'bernoulli', 'gaussian'}
        The output model the pair was trained with (not stored in the files).
    logvar_bound : float
        ``B`` of the Gaussian's shared log-variance ``B tanh(b / B)``: 6 in the 2015
        scripts (the 2015 classes default to 10 when a script does not set it).
    **model_options
        Passed to ``OneStageModel`` (``lr``, ``momentum``, ``seed``, ...).
        ``init_scale`` defaults to q's file value.

    Returns
    -------
    OneStageModel

    Raises
    ------
    Orig2015Error
        A file does not fit, or q and p do not fit together.
    """
    if x_type not in X_TYPES:
        raise ValueError(f"x_type must be one of {X_TYPES}, got {x_type!r}")
    q = q_file if isinstance(q_file, InfNetFile) else read_2015_infnet(q_file)
    p = p_file if isinstance(p_file, InfNetFile) else read_2015_infnet(p_file)
    if p.n_in != q.n_out or p.n_out != q.n_in:
        raise Orig2015Error(
            f"{q.path} (q: {q.n_in} -> z {q.n_out}) and {p.path} (p: z {p.n_in} -> {p.n_out}) "
            "do not fit together: p must map q's z back to q's input size (check which "
            "file is q and which is p)")
    model_options.setdefault("init_scale", q.init_scale)
    model = OneStageModel(q.n_in, q.n_out, q.hidden, p.hidden, x_type=x_type,
                          logvar_bound=logvar_bound, **model_options)
    set_infnet_from_2015(model.q, q)
    set_infnet_from_2015(model.p, p)
    return model


def load_2015_guide(file, rng=None, squash=20.0, name="guide", act_penalty="vgsn"):
    """A ``MaxoutGuide`` holding a 2015 PeaNet file's maxout layers.

    Sizes, drop rates, bias and input noise and ``init_scale`` come from the file;
    the output unit ``f = squash tanh((h @ w + c) / squash)`` starts fresh (drawn
    from ``rng``), as the 2015 VCGLoop built it.

    Parameters
    ----------
    file : path or PeaNetFile
    rng : numpy.random.Generator, optional
        Draws the fresh output unit (default: ``default_rng(0)``).
    squash : float
    name : str
    act_penalty : {'vgsn', 'code2015'}
        'code2015': the 2015 activation penalty, whose bypassed 10-way layer is the
        file's classifier layer (its W; the 2015 code never trained it, so its bias
        must be zero).

    Returns
    -------
    MaxoutGuide
    """
    f = file if isinstance(file, PeaNetFile) else read_2015_peanet(file)
    rng = np.random.default_rng(0) if rng is None else rng
    guide = MaxoutGuide(f.n_in, rng, units=f.units, pool=f.pool, n_layers=f.n_layers,
                        init_scale=f.init_scale, vis_drop=f.vis_drop, hid_drop=f.hid_drop,
                        bias_noise=f.bias_noise, input_noise=f.input_noise, squash=squash,
                        act_penalty=act_penalty, name=name)
    if act_penalty == "code2015":
        W, b = f.classifier["W"], f.classifier["b"]
        if f.n_classes != 10 or np.any(np.asarray(b) != 0):
            _fail(f.path, f"the classifier layer ({f.n_classes} classes, bias "
                          f"{'nonzero' if np.any(np.asarray(b) != 0) else 'zero'}) cannot be the "
                          "2015 activation penalty's: it needs 10 classes and a zero bias "
                          "(load with act_penalty='vgsn')")
        _assign(f.path, "layers[-1]['W']", guide.classifier_W, W)
    return set_guide_from_2015(guide, f)


def load_2015_loop(q_file, p_file, guide_file, x_type="bernoulli", disc_W=None, disc_b=None,
                   lam_kl=1.2, seed=0, **loop_options):
    """A ``VCGLoop`` set up as the 2015 MNIST script's walk phase, from its three files.

    q and p as :func:`load_2015_model`; the guide as :func:`load_2015_guide` with the
    2015 activation penalty (the file's 10-way layer). The walk phase's settings
    (``MnistWalkoutTest.py``, ``train_walk_from_pretrained_osm``; SPEC.md): a 6-step
    walkout chain whose VAE cost is step 0's only (``step_decay=0``), the KL weight
    ``lam_kl`` without a squared term, the half-rectified elastic net and the 2015
    guide loss, weights 25 / 25, ``lam_l2d`` 0.05, ``lam_l2a`` the file's (0.01), L2
    1e-4 on every q/p parameter, learning rate 4e-4 for all, momentum 0.5, clipping
    at norm 10.

    Parameters
    ----------
    q_file, p_file, guide_file : path or the read file
    x_type : {'bernoulli', 'gaussian'}
    disc_W, disc_b : array (units, 1) and (1,), optional
        The guide's output unit; the 2015 VCGLoop drew it fresh after loading, so
        without them it is drawn (``default_rng(seed)``), N(0, 1) x init_scale, b 0.
    lam_kl : float
        The chain's KL weight (the script's active line: 1.2).
    seed : int
    **loop_options
        Override any ``VCGLoop`` argument (``lr_gen``, ``steps``, ...).

    Returns
    -------
    VCGLoop (its ``model`` the loaded ``OneStageModel``, its ``guide`` the guide)
    """
    model = load_2015_model(q_file, p_file, x_type=x_type, lam_kl=lam_kl, gamma_kl=0.0,
                            l2=1e-4, l2_on="all", momentum=0.5, batch_repeat=5, seed=seed)
    g = guide_file if isinstance(guide_file, PeaNetFile) else read_2015_peanet(guide_file)
    guide = load_2015_guide(g, rng=np.random.default_rng(seed), act_penalty="code2015")
    for value, var, what in ((disc_W, guide.output.W, "disc_W"), (disc_b, guide.output.b, "disc_b")):
        if value is None:
            continue
        value = np.asarray(value, np.float32)
        shape = var.get_value().shape
        if value.size != int(np.prod(shape)):
            raise ValueError(f"{what} must have {int(np.prod(shape))} values (shape {shape}), "
                             f"got shape {value.shape}")
        var.set_value(value.reshape(shape))
    options = dict(steps=6, walkback=False, step_decay=0.0, gen_loss="elastic",
                   guide_loss="code2015", chain_gamma=False, lr_gen=4e-4, lr_guide=4e-4,
                   lam_l2d=0.05, lam_l2a=g.lam_l2a, gen_weight=25.0, guide_weight=25.0,
                   momentum=0.5, max_norm=10.0, seed=seed)
    options.update(loop_options)
    return VCGLoop(model, guide, **options)


# =============================================================================
# Exporting


# =============================================================================

def _value(var):
    return np.array(var.get_value(), dtype=np.float32)


def _layer_dict(W, b):
    n_in = W.shape[0]
    return {"W": np.asarray(W, np.float32), "b": np.asarray(b, np.float32),
            "b_in": np.zeros(n_in, np.float32),
            "s_in": np.full(n_in, S_IN_INIT, np.float32)}


def _write(path, pickles):
    """Write consecutive Python-2 style protocol-2 pickles (gzipped for '*.gz')."""
    path = os.fspath(path)
    data = b"".join(safe_pickle.dumps_py2(obj) for obj in pickles)
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    part = path + ".part"
    with open(part, "wb") as f:
        f.write(data)
    os.replace(part, path)
    return path


def export_2015_infnet(net, path, init_scale=1.4, kld_mean=0.0, prior_sigma=1.0):
    """Write a vgsn ``InfNet`` as a 2015 ``InfNet.save_to_file`` file.

    Parameters
    ----------
    net : vgsn.model.nets.InfNet
    path : str or path-like
        Gzipped when it ends in ``.gz``.
    init_scale : float
        Stored in the params dict (vgsn's InfNet does not keep it).
    kld_mean : float
        The 2015 running mean of the posterior KL, stored beside ``sigma_scale``
        (unused by any cost; vgsn does not track it).
    prior_sigma : float

    Returns
    -------
    str : the path written.
    """
    h = net.hidden[-1]
    config_out = [h, net.n_out]
    params = {
        "activation": RELU, "bias_noise": 0.0, "build_theano_funcs": True, "hid_drop": 0.0,
        "init_scale": float(init_scale), "input_noise": 0.0, "lam_l2a": 0.0,
        "mu_config": list(config_out), "shared_config": [net.n_in] + list(net.hidden),
        "sigma_config": list(config_out), "vis_drop": 0.0}
    shared = [_layer_dict(_value(l.W), _value(l.b)) for l in net.hidden_layers]
    mu = [_layer_dict(_value(net.mean_head.W), _value(net.mean_head.b))]
    if net.logvar_head is not None:
        sigma_W, sigma_b = _value(net.logvar_head.W), _value(net.logvar_head.b)
    else:  # p: an unused head whose b[0] is the shared log-variance parameter
        sigma_W, sigma_b = np.zeros((h, net.n_out), np.float32), np.zeros(net.n_out, np.float32)
        if net.logvar_param is not None:
            sigma_b[0] = _value(net.logvar_param)
    sigma = [_layer_dict(sigma_W, sigma_b),
             {"sigma_scale": np.ones(1, np.float32),
              "kld_mean": np.full(1, kld_mean, np.float32)}]
    return _write(path, [float(prior_sigma), params, {"shared": shared, "mu": mu, "sigma": sigma}])


def export_2015_model(model, q_path, p_path, kld_mean=0.0):
    """Write a ``OneStageModel``'s q and p as two 2015 InfNet files.

    The 2015 ``OneStageModel`` / ``VCGLoop`` built from them needs
    ``params['x_type']`` = ``model.x_type`` and ``params['logvar_bound']`` =
    ``model.config['logvar_bound']`` (neither lives in the files).

    Returns
    -------
    (str, str) : the paths written.
    """
    scale = model.config["init_scale"]
    return (export_2015_infnet(model.q, q_path, scale, kld_mean=kld_mean),
            export_2015_infnet(model.p, p_path, scale))


def export_2015_guide(guide, path, init_scale=0.75, lam_l2a=0.01, n_classes=10):
    """Write a ``MaxoutGuide``'s maxout layers as a 2015 PeaNet file.

    The proto-net's last layer is the guide's ``classifier_W`` (the 2015 activation
    penalty's bypassed 10-way layer) with a zero bias, or zeros of ``n_classes`` ways
    when the guide has none; the guide's output unit has no place in the
    layout and is not written (the 2015 VCGLoop builds a fresh one).

    Parameters
    ----------
    guide : vgsn.model.nets.MaxoutGuide
    path : str or path-like
        Gzipped when it ends in ``.gz``.
    init_scale, lam_l2a : float
        Stored in the params dict (the guide does not keep them).
    n_classes : int

    Returns
    -------
    str : the path written.
    """
    units, pool = guide.units, guide.pool
    config = [guide.n_in] + [(units, pool)] * len(guide.layers) + [int(n_classes)]
    params = {
        "hid_drop": guide.hid_drop, "init_scale": float(init_scale), "lam_l2a": float(lam_l2a),
        "proto_configs": [config],
        "spawn_configs": [{"do_dropout": True, "bias_noise": guide.bias_noise,
                           "input_noise": guide.input_noise, "proto_key": 0}],
        "spawn_weights": [1.0], "vis_drop": guide.vis_drop}
    layers = [_layer_dict(_value(l.W), _value(l.b)) for l in guide.layers]
    if guide.classifier_W is not None:
        W_c = _value(guide.classifier_W)
    else:
        W_c = np.zeros((units, int(n_classes)), np.float32)
    params["proto_configs"][0][-1] = W_c.shape[1]
    layers.append(_layer_dict(W_c, np.zeros(W_c.shape[1], np.float32)))
    return _write(path, [params, layers])
