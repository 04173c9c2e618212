"""Reading the 2015 author code's saved networks: the pickles, checked; no vgsn networks.

The 2015 code (Theano, Python 2) saved a network with ``InfNet.save_to_file``
(q(z|x) or p(x|z)) or ``PeaNet.save_to_file`` (the guide) as several cPickle
protocol-2 pickles written one after another into one file (the layout is
spelled out in ``ORIG2015_PICKLES.md``):

InfNet file: ``prior_sigma`` (float); ``params`` (the config dict, with
``shared_config``, ``mu_config``, ``sigma_config``, ``init_scale``, noise
levels and ``activation``, a reference to ``NetLayers.relu_actfun``); then
``{'shared': [...], 'mu': [...], 'sigma': [..., {'sigma_scale', 'kld_mean'}]}``,
one dict ``{'W': (in, out), 'b': (out,), 'b_in': (in,), 's_in': (in,)}`` per layer.

PeaNet file: ``params`` (``proto_configs`` like ``[[784, (300, 4), (300, 4), 10]]``,
``spawn_configs``, drop rates, ``init_scale``); then the list of the proto-net's
layer dicts.

Safety
------
Loading never executes anything from the file: every pickle goes through
:class:`vgsn.data.safe_pickle.RestrictedUnpickler`, which admits numpy arrays and
plain containers only; the handful of 2015 function names a params dict may hold
(``NetLayers.relu_actfun`` and the other activations) become inert
:class:`Function2015` placeholders and are never imported. Any other global
(``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError``.

``read_2015_infnet`` / ``read_2015_peanet`` return the checked content
(:class:`InfNetFile`, :class:`PeaNetFile`); ``vgsn.compat2015.convert`` puts it into vgsn's nets
and writes vgsn's nets back in the same layout.
"""
import gzip
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from vgsn.data import safe_pickle
from vgsn.backend import floatX

__all__ = [
    "Orig2015Error", "Function2015", "InfNetFile", "PeaNetFile", "PLACEHOLDERS", "RELU",
    "S_IN_INIT", "read_2015_infnet", "read_2015_peanet",
]


#: ``s_in`` of a freshly built 2015 HiddenLayer: softplus^-1(1), so that the
#: (commented-out) input rescaling softplus(s_in) started at 1.
S_IN_INIT = 0.541325
GZIP_MAGIC = b"\x1f\x8b"


class Orig2015Error(ValueError):
    """A 2015 file does not fit: wrong structure, a config vgsn cannot represent,
    or a shape that disagrees with the file's config or the target network. The
    message names the file and the entry."""


class Function2015:
    """Inert stand-in for a function of the 2015 code named in a pickle.

    Unpickling maps the global (e.g. ``NetLayers.relu_actfun``) to one of these
    instead of importing it. Pickling one writes the same global reference back
    (the name only: nothing is imported, here or when the file is written), which
    is how exported params dicts name ``NetLayers.relu_actfun``.
    """

    def __init__(self, module, name):
        self.module, self.name = module, name
        # pickle.whichmodule reads __module__; the pickler then writes
        # GLOBAL "<module>\n<name>" without importing anything.
        self.__module__ = module
        self.__qualname__ = name

    def __reduce__(self):
        return self.name  # "a global named <name> in <__module__>"

    def __call__(self, *args, **kwargs):
        raise TypeError(f"{self!r} is a placeholder for a function of the 2015 code; "
                        "it cannot be called")

    def __eq__(self, other):
        return (isinstance(other, Function2015)
                and (self.module, self.name) == (other.module, other.name))

    def __hash__(self):
        return hash((Function2015, self.module, self.name))

    def __repr__(self):
        return f"<2015 function {self.module}.{self.name}>"


_ACTIVATIONS = ("relu_actfun", "rehu_actfun", "softplus_actfun", "tanh_actfun", "noop_actfun")
#: The only globals a 2015 file may name besides numpy's: the NetLayers
#: activations a params dict can hold, each mapped to a placeholder.
PLACEHOLDERS = {("NetLayers", n): Function2015("NetLayers", n) for n in _ACTIVATIONS}
RELU = PLACEHOLDERS[("NetLayers", "relu_actfun")]


# =============================================================================
# Reading
# =============================================================================

def _read_pickles(path):
    """All consecutive pickles of a plain or gzipped file, read safely."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        return safe_pickle.load_all(f, name=path, placeholders=PLACEHOLDERS)


def _fail(path, message):
    raise Orig2015Error(f"{path}: {message}")


def _number(path, where, value):
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        _fail(path, f"{where} must be a number, got {value!r}")
    return float(value)


def _array(path, where, value, shape):
    """``value`` as float32 after checking it is a finite numeric array of ``shape``."""
    if not isinstance(value, np.ndarray):
        _fail(path, f"{where} must be a numpy array, got {type(value).__name__}")
    if value.dtype.kind not in "fiu":
        _fail(path, f"{where} has dtype {value.dtype}, expected float32")
    if value.shape != tuple(shape):
        _fail(path, f"{where} has shape {value.shape}, expected {tuple(shape)} "
                    "from the file's config")
    if not np.all(np.isfinite(value)):
        _fail(path, f"{where} holds NaN or infinite values")
    return np.asarray(value, dtype=floatX)


def _layer(path, where, entry, n_in, n_out):
    """Check one 2015 layer dict; returns {'W', 'b'[, 'b_in', 's_in']} as float32."""
    if not isinstance(entry, dict):
        _fail(path, f"{where} must be a layer dict with 'W' and 'b', got {type(entry).__name__}")
    for key in ("W", "b"):
        if key not in entry:
            _fail(path, f"{where} has no {key!r} (keys: {sorted(map(str, entry))})")
    layer = {"W": _array(path, f"{where}['W']", entry["W"], (n_in, n_out)),
             "b": _array(path, f"{where}['b']", entry["b"], (n_out,))}
    for key in ("b_in", "s_in"):  # unused by the forward pass; checked, kept for reference
        if key in entry:
            layer[key] = _array(path, f"{where}[{key!r}]", entry[key], (n_in,))
    return layer


def _units(path, where, entry):
    """An InfNet config entry must be a plain layer size (vgsn has no maxout q/p)."""
    if isinstance(entry, (tuple, list)):
        _fail(path, f"{where} is {tuple(entry)!r}, a maxout layer (units, pool); vgsn's "
                    "InfNet has plain ReLU layers only")
    if isinstance(entry, bool) or not isinstance(entry, (int, np.integer)) or entry < 1:
        _fail(path, f"{where} must be a positive layer size, got {entry!r}")
    return int(entry)


@dataclass
class InfNetFile:
    """The checked content of a 2015 InfNet file (arrays float32).

    Attributes
    ----------
    path : str
    prior_sigma : float
    params : dict
        The config dict as saved (``activation`` is a :class:`Function2015`).
    n_in, hidden, n_out : int, list of int, int
        From ``shared_config`` and ``mu_config``.
    shared, mu, sigma : list of dict
        Layer dicts ``{'W', 'b'[, 'b_in', 's_in']}``; ``sigma`` without the trailing
        ``{'sigma_scale', 'kld_mean'}`` dict.
    sigma_scale, kld_mean : float or None
        From that trailing dict (absent in files older than those parameters).
    """

    path: str
    prior_sigma: float
    params: dict
    n_in: int
    hidden: list
    n_out: int
    shared: list
    mu: list
    sigma: list
    sigma_scale: float = None
    kld_mean: float = None

    @property
    def init_scale(self):
        """``params['init_scale']`` (the 2015 default 1.0 when absent)."""
        return float(self.params.get("init_scale", 1.0))

    def summary(self):
        """One line describing the network (for logs and the compare CLI)."""
        return (f"{self.path}: {self.n_in} -> {'-'.join(map(str, self.hidden))} -> {self.n_out} "
                f"(init_scale {self.init_scale}, prior_sigma {self.prior_sigma}, sigma_scale "
                f"{self.sigma_scale}, kld_mean {self.kld_mean}, sigma b[0] "
                f"{float(self.sigma[0]['b'][0]):.6g})")


def read_2015_infnet(path):
    """Read and check a 2015 ``InfNet.save_to_file`` file (plain or gzipped).

    Every array's shape is checked against the configs in the file, and the configs
    against what vgsn's ``InfNet`` can represent (ReLU hidden layers, single linear
    mean and log-variance heads).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    InfNetFile

    Raises
    ------
    pickle.UnpicklingError
        The file is not a readable pickle, or names a global other than numpy's and
        the 2015 activations (nothing from it is run).
    Orig2015Error
        Anything else that does not fit; the message names the file and the entry.
    """
    path = os.fspath(path)
    objects = _read_pickles(path)
    if len(objects) != 3:
        _fail(path, f"holds {len(objects)} pickles; a 2015 InfNet file holds 3 (prior_sigma, "
                    "params, layer dicts)" + ("; this looks like a PeaNet (guide) file"
                                              if len(objects) == 2 else ""))
    prior_sigma, params, arrays = objects
    prior_sigma = _number(path, "prior_sigma (first pickle)", prior_sigma)
    if not isinstance(params, dict):
        _fail(path, f"the second pickle must be the params dict, got {type(params).__name__}")
    for key in ("shared_config", "mu_config", "sigma_config"):
        if key not in params:
            _fail(path, f"params has no {key!r} (keys: {sorted(map(str, params))})")
        if not isinstance(params[key], (list, tuple)) or len(params[key]) < 2:
            _fail(path, f"params[{key!r}] must be a list of at least 2 layer sizes, "
                        f"got {params[key]!r}")
    cfg = {key: [_units(path, f"params[{key!r}][{i}]", e) for i, e in enumerate(params[key])]
           for key in ("shared_config", "mu_config", "sigma_config")}
    shared_cfg, mu_cfg, sigma_cfg = cfg["shared_config"], cfg["mu_config"], cfg["sigma_config"]
    for key in ("mu_config", "sigma_config"):
        if len(cfg[key]) != 2:
            _fail(path, f"params[{key!r}] = {params[key]!r} has hidden layers; vgsn's mean and "
                        "log-variance heads are single linear layers")
        if cfg[key][0] != shared_cfg[-1]:
            _fail(path, f"params[{key!r}][0] = {cfg[key][0]} does not match the last "
                        f"shared layer, params['shared_config'][-1] = {shared_cfg[-1]}")
    if mu_cfg[-1] != sigma_cfg[-1]:
        _fail(path, f"mu_config ends in {mu_cfg[-1]} but sigma_config in {sigma_cfg[-1]}")
    activation = params.get("activation", RELU)
    if activation != RELU:
        _fail(path, f"params['activation'] is {activation!r}; vgsn's InfNet uses "
                    "NetLayers.relu_actfun (ReLU) only")
    if "encoder" in params:
        _fail(path, "params has an 'encoder' (input preprocessing) that vgsn cannot apply")
    noisy = {k: params[k] for k in ("vis_drop", "hid_drop", "input_noise", "bias_noise")
             if k in params and _number(path, f"params[{k!r}]", params[k]) != 0.0}
    if noisy:
        warnings.warn(f"{path}: training-time noise {noisy} is not carried over: vgsn's InfNet "
                      "is noise-free (the 2015 scripts used 0 for q and p)", stacklevel=2)
    if not isinstance(arrays, dict):
        _fail(path, f"the third pickle must be the dict of layer lists, got {type(arrays).__name__}")
    for key in ("shared", "mu", "sigma"):
        if not isinstance(arrays.get(key), list):
            _fail(path, f"the layer dict has no list {key!r} (keys: {sorted(map(str, arrays))})")
    n_shared = len(shared_cfg) - 1
    if len(arrays["shared"]) != n_shared:
        _fail(path, f"'shared' has {len(arrays['shared'])} layers but shared_config "
                    f"{shared_cfg} describes {n_shared}")
    shared = [_layer(path, f"['shared'][{i}]", e, a, b)
              for i, (e, a, b) in enumerate(zip(arrays["shared"], shared_cfg[:-1], shared_cfg[1:]))]
    if len(arrays["mu"]) != 1:
        _fail(path, f"'mu' has {len(arrays['mu'])} layers, mu_config {mu_cfg} describes 1")
    mu = [_layer(path, "['mu'][0]", arrays["mu"][0], *mu_cfg)]
    sigma_entries = list(arrays["sigma"])
    extra = {}
    if sigma_entries and isinstance(sigma_entries[-1], dict) and "W" not in sigma_entries[-1]:
        extra = sigma_entries.pop()
    if len(sigma_entries) != 1:
        _fail(path, f"'sigma' has {len(sigma_entries)} layers, sigma_config {sigma_cfg} "
                    "describes 1")
    sigma = [_layer(path, "['sigma'][0]", sigma_entries[0], *sigma_cfg)]
    unknown = set(map(str, extra)) - {"sigma_scale", "kld_mean"}
    if unknown:
        _fail(path, f"the last 'sigma' entry has unknown keys {sorted(unknown)}")
    sigma_scale = (_number(path, "['sigma'][-1]['sigma_scale']", extra["sigma_scale"])
                   if "sigma_scale" in extra else None)
    kld_mean = (_number(path, "['sigma'][-1]['kld_mean']", extra["kld_mean"])
                if "kld_mean" in extra else None)
    sigma_init = _number(path, "params['sigma_init_scale']", params.get("sigma_init_scale", 1.0))
    if (sigma_scale not in (None, 1.0)) or sigma_init != 1.0:
        warnings.warn(f"{path}: posterior samples were scaled by sigma_scale={sigma_scale}, "
                      f"sigma_init_scale={sigma_init}; vgsn samples z with scale 1 (the "
                      "training setting)", stacklevel=2)
    return InfNetFile(path=path, prior_sigma=prior_sigma, params=params, n_in=shared_cfg[0],
                      hidden=shared_cfg[1:], n_out=mu_cfg[-1], shared=shared, mu=mu,
                      sigma=sigma, sigma_scale=sigma_scale, kld_mean=kld_mean)


@dataclass
class PeaNetFile:
    """The checked content of a 2015 PeaNet (guide) file (arrays float32).

    Attributes
    ----------
    path : str
    params : dict
    n_in, units, pool, n_layers : int
        Input size and the maxout layers' shape (every maxout layer alike).
    n_classes : int
        Size of the proto-net's last (classifier) layer, which vgsn ignores.
    layers : list of dict
        The maxout layers' ``{'W', 'b'[, 'b_in', 's_in']}``.
    classifier : dict
        The ignored last layer.
    vis_drop, hid_drop, bias_noise, input_noise, init_scale, lam_l2a : float
        Noise levels (``do_dropout`` False gives 0 drop rates), init gain and the
        hidden-activation penalty weight, for the MaxoutGuide and its trainer.
    """

    path: str
    params: dict
    n_in: int
    units: int
    pool: int
    n_layers: int
    n_classes: int
    layers: list
    classifier: dict
    vis_drop: float = 0.0
    hid_drop: float = 0.0
    bias_noise: float = 0.0
    input_noise: float = 0.0
    init_scale: float = 1.0
    lam_l2a: float = 0.0
    notes: list = field(default_factory=list)

    def summary(self):
        return (f"{self.path}: {self.n_in} -> {self.n_layers} x maxout ({self.units}, {self.pool}) "
                f"[-> {self.n_classes}-way classifier, ignored] (vis_drop {self.vis_drop}, "
                f"hid_drop {self.hid_drop}, bias_noise {self.bias_noise}, input_noise "
                f"{self.input_noise}, init_scale {self.init_scale}, lam_l2a {self.lam_l2a})")


def read_2015_peanet(path):
    """Read and check a 2015 ``PeaNet.save_to_file`` file (plain or gzipped).

    The proto-net must be ``[n_in, (units, pool), ..., (units, pool), n_classes]``
    with one spawn net: maxout layers that vgsn's ``MaxoutGuide`` represents, and a
    last (classifier) layer that the 2015 chain training bypassed and vgsn ignores.

    Returns
    -------
    PeaNetFile

    Raises
    ------
    pickle.UnpicklingError, Orig2015Error
        As for :func:`read_2015_infnet`.
    """
    path = os.fspath(path)
    objects = _read_pickles(path)
    if len(objects) != 2:
        _fail(path, f"holds {len(objects)} pickles; a 2015 PeaNet file holds 2 (params, "
                    "layer dicts)" + ("; this looks like an InfNet (q or p) file"
                                      if len(objects) == 3 else ""))
    params, entries = objects
    if not isinstance(params, dict) or "proto_configs" not in params:
        _fail(path, "the first pickle must be the params dict with 'proto_configs'")
    protos = params["proto_configs"]
    if not isinstance(protos, (list, tuple)) or len(protos) != 1:
        _fail(path, f"params['proto_configs'] must hold exactly one proto-net, got {protos!r}")
    config = protos[0]
    if not isinstance(config, (list, tuple)) or len(config) < 3:
        _fail(path, f"params['proto_configs'][0] must be [n_in, (units, pool), ..., n_classes], "
                    f"got {config!r}")
    where = "params['proto_configs'][0]"
    n_in = _units(path, f"{where}[0]", config[0])
    n_classes = _units(path, f"{where}[{len(config) - 1}]", config[-1])
    shapes = []
    for i, entry in enumerate(config[1:-1], start=1):
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            _fail(path, f"{where}[{i}] is {entry!r}, not a maxout layer (units, pool); vgsn's "
                        "MaxoutGuide has maxout layers only")
        units, pool = (_units(path, f"{where}[{i}][{j}]", v) for j, v in enumerate(entry))
        shapes.append((units, pool))
    if len(set(shapes)) != 1:
        _fail(path, f"{where} = {config!r}: vgsn's MaxoutGuide needs every maxout layer to have "
                    "the same (units, pool)")
    units, pool = shapes[0]
    spawns = params.get("spawn_configs", [{}])
    if not isinstance(spawns, (list, tuple)) or len(spawns) != 1 or not isinstance(spawns[0], dict):
        _fail(path, f"params['spawn_configs'] must hold exactly one spawn net (vgsn's guide is a "
                    f"single network), got {spawns!r}")
    spawn = spawns[0]
    if int(spawn.get("proto_key", 0)) != 0:
        _fail(path, f"params['spawn_configs'][0]['proto_key'] is {spawn['proto_key']!r}, expected 0")
    if not isinstance(entries, list):
        _fail(path, f"the second pickle must be the list of layer dicts, got {type(entries).__name__}")
    n_layers = len(config) - 1
    if len(entries) != n_layers:
        _fail(path, f"holds {len(entries)} layer dicts but {where} = {config!r} describes {n_layers}")
    layers, fan_in = [], n_in
    for i in range(n_layers - 1):
        layers.append(_layer(path, f"layers[{i}]", entries[i], fan_in, units * pool))
        fan_in = units
    classifier = _layer(path, f"layers[{n_layers - 1}]", entries[-1], units, n_classes)
    num = lambda key, default, src=params: _number(path, f"{key!r}", src.get(key, default))  # noqa: E731
    do_dropout = bool(spawn.get("do_dropout", True))
    return PeaNetFile(
        path=path, params=params, n_in=n_in, units=units, pool=pool, n_layers=n_layers - 1,
        n_classes=n_classes, layers=layers, classifier=classifier,
        vis_drop=num("vis_drop", 0.0) if do_dropout else 0.0,
        hid_drop=num("hid_drop", 0.0) if do_dropout else 0.0,
        bias_noise=num("bias_noise", 0.0, spawn), input_noise=num("input_noise", 0.0, spawn),
        init_scale=num("init_scale", 1.0), lam_l2a=num("lam_l2a", 0.0),
        notes=[f"the {n_classes}-way classifier layer is ignored (the 2015 chain training "
               "bypassed it); the guide's output unit starts fresh"])
