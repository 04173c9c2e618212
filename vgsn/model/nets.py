"""The networks: ``InfNet`` (q(z|x) and p(x|z)) and ``MaxoutGuide`` (the guide f).

Both are functions of their shared parameters: ``apply`` builds symbolic outputs
for any symbolic input and may be called many times (once per chain step inside
``scan``, on the guide's stacked input, ...) with the same shared variables.
Names follow the 2015 code where users compare the two (SPEC.md section 5).
Nets compile nothing: the models build every compiled function (``vgsn.model.vae``).

``InfNet.forward`` is the one forward pass of q and p (the chain calls it too), and
``InfNet.backward`` its stored-activation backward pass (``vgsn.model.bptt``), side by side.
"""
from collections import namedtuple

import numpy as np

from vgsn.backend import T, floatX, shared
from vgsn.model.layers import (Dense, Maxout, dropout_mask, gaussian_noise, hidden_bias, orthogonal,
                         relu, relu_grad)

LOGVAR_MODES = ("head", "shared", "none")
#: MaxoutGuide's activation-penalty forms (``presets.GUIDE_PENALTIES`` names the same).
ACT_PENALTIES = ("vgsn", "code2015")

Forward = namedtuple("Forward", ["mean", "logvar", "hidden"])
Forward.__doc__ = """What ``InfNet.forward`` returns.

mean : (rows, n_out) the linear mean-head output (for p: the logits)
logvar : (rows, n_out) for 'head', a scalar for 'shared', None for 'none'
hidden : list of (rows, hidden[i]) ReLU outputs, one per hidden layer
"""


class InfNet:
    """MLP with ReLU hidden layers and linear mean / log-variance heads.

    Used for q(z|x) (``logvar='head'``: a per-dimension log-variance head whose W
    starts at 0, so q starts with unit variance) and for p(x|z) (``logvar='shared'``:
    ONE learned scalar b shared by all pixels, bounded as
    ``logvar = bound * tanh(b / bound)`` for a Gaussian output; ``logvar='none'``
    for a Bernoulli output).

    Parameters
    ----------
    n_in : int
    hidden : sequence of int
        Sizes of the ReLU hidden layers (the 2015 ``shared_config`` minus its input).
    n_out : int
    name : str
        Prefix of every parameter name (``q`` or ``p``).
    rng : numpy.random.Generator
    init_scale : float
        Gain of the orthogonal hidden and mean-head weights (1.4 in the 2015 scripts).
    logvar : {'head', 'shared', 'none'}
    logvar_bound : float
        ``B`` of the tanh bound on the shared log-variance (6 in the 2015 code).
    init_weights : bool
        False: zero weights without the SVDs (a checkpoint fills them next).
    """

    def __init__(self, n_in, hidden, n_out, name, rng, init_scale=1.4, logvar="head",
                 logvar_bound=6.0, init_weights=True):
        if logvar not in LOGVAR_MODES:
            raise ValueError(f"{name}: logvar must be one of {LOGVAR_MODES}, got {logvar!r}")
        if logvar_bound <= 0:
            raise ValueError(f"{name}: logvar_bound must be > 0, got {logvar_bound}")
        hidden = [int(h) for h in hidden]
        if not hidden:
            raise ValueError(f"{name}: needs at least one hidden layer, got hidden={hidden}")
        self.name, self.n_in, self.hidden, self.n_out = name, int(n_in), hidden, int(n_out)
        self.logvar_mode, self.logvar_bound = logvar, float(logvar_bound)
        sizes = [self.n_in] + hidden
        self.hidden_layers = [
            Dense(a, b, f"{name}.h{i}", W=orthogonal((a, b), init_scale, rng, init_weights),
                  b=hidden_bias(b, rng))
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
        self.mean_head = Dense(hidden[-1], self.n_out, f"{name}.mean",
                               W=orthogonal((hidden[-1], self.n_out), init_scale, rng,
                                            init_weights))
        self.params = [p for layer in self.hidden_layers for p in layer.params]
        self.params += self.mean_head.params
        self.logvar_head = None
        self.logvar_param = None
        if logvar == "head":
            self.logvar_head = Dense(hidden[-1], self.n_out, f"{name}.logvar")
            self.params += self.logvar_head.params
        elif logvar == "shared":
            self.logvar_param = shared(np.zeros((), floatX), name=f"{name}.logvar_b")
            self.params.append(self.logvar_param)

    @property
    def weights(self):
        """The weight matrices (what L2 weight decay acts on)."""
        return [p for p in self.params if p.name.endswith(".W")]

    @property
    def dense_layers(self):
        """Every affine layer, in the order of ``backward``'s deltas: the hidden
        layers, the mean head, then the log-variance head ('head' mode)."""
        heads = [self.mean_head] + ([self.logvar_head] if self.logvar_head is not None else [])
        return list(self.hidden_layers) + heads

    def hidden_output(self, x):
        """(rows, n_in) -> (rows, hidden[-1]) last ReLU layer."""
        return self.forward(x).hidden[-1]

    def shared_logvar(self):
        """The bounded shared log-variance ``B tanh(b / B)`` (a symbolic scalar);
        'shared' mode only."""
        if self.logvar_param is None:
            raise ValueError(f"{self.name} has logvar={self.logvar_mode!r}, not 'shared'")
        bound = np.float32(self.logvar_bound)
        return bound * T.tanh(self.logvar_param / bound)

    def shared_logvar_grad(self):
        """d shared_logvar / d b = 1 - tanh(b / B)^2 (a symbolic scalar)."""
        if self.logvar_param is None:
            raise ValueError(f"{self.name} has logvar={self.logvar_mode!r}, not 'shared'")
        th = T.tanh(self.logvar_param / np.float32(self.logvar_bound))
        return np.float32(1.0) - T.square(th)

    def forward(self, x):
        """The forward pass for input ``x`` (rows, n_in): a ``Forward`` (mean,
        logvar, hidden activations)."""
        h, hidden = x, []
        for layer in self.hidden_layers:
            h = relu(layer.apply(h))
            hidden.append(h)
        mean = self.mean_head.apply(h)
        if self.logvar_mode == "head":
            logvar = self.logvar_head.apply(h)
        elif self.logvar_mode == "shared":
            logvar = self.shared_logvar()
        else:
            logvar = None
        return Forward(mean, logvar, hidden)

    def backward(self, hidden, g_mean, g_logvar=None):
        """Back through the heads and the ReLU layers of one ``forward``, from its
        stored ``hidden`` activations (nothing is recomputed).

        Parameters
        ----------
        hidden : list of (rows, hidden[i]), ``forward(x).hidden``
        g_mean : (rows, n_out) d cost / d mean
        g_logvar : (rows, n_out) d cost / d logvar ('head' mode), optional

        Returns
        -------
        g_x : (rows, n_in) d cost / d x
        deltas : list, d cost / d (pre-activation) of each of ``dense_layers``
        """
        heads = [g_mean]
        g_h = T.dot(g_mean, self.mean_head.W.T)
        if self.logvar_head is not None and g_logvar is not None:
            heads.append(g_logvar)
            g_h = g_h + T.dot(g_logvar, self.logvar_head.W.T)
        deltas = []
        for i in reversed(range(len(self.hidden_layers))):
            g_a = relu_grad(g_h, hidden[i])
            deltas.insert(0, g_a)
            g_h = T.dot(g_a, self.hidden_layers[i].W.T)
        return g_h, deltas + heads

    def layer_inputs(self, x, hidden):
        """The input of each of ``dense_layers`` given ``forward(x).hidden`` (the
        weight gradient of a layer is input^T delta)."""
        n_heads = len(self.dense_layers) - len(self.hidden_layers)
        return [x] + list(hidden[:-1]) + [hidden[-1]] * n_heads

    def apply(self, x):
        """Symbolic outputs for input ``x`` (rows, n_in).

        Returns
        -------
        (mean, logvar) : mean (rows, n_out) is the LINEAR mean-head output (for p:
        the logits, whose sigmoid is E[x|z]); logvar is (rows, n_out) for 'head',
        a scalar for 'shared' and None for 'none'.
        """
        out = self.forward(x)
        return out.mean, out.logvar


class MaxoutGuide:
    """The guide f(x): two maxout layers and one linear unit squashed as
    ``f = squash * tanh(a / squash)`` (the role of the 2015 PeaNet, SPEC.md section 5).

    Training-time noise (inverted dropout on the input and on each hidden layer's
    output, Gaussian "bias noise" on the maxout pre-activations, optional input
    noise) is drawn by ``draw_noise`` on the host and passed to ``apply`` as
    symbolic inputs.

    Parameters
    ----------
    n_in : int
    rng : numpy.random.Generator
    units, pool : int
        Each maxout layer has ``units`` outputs pooling ``pool`` linear units (300, 4).
    n_layers : int
    init_scale : float
        Hidden weights are orthogonal with gain ``init_scale / sqrt(fan_in)``; the
        output weights ``N(0, 1) * init_scale`` (0.75 MNIST, 1.0 TFD).
    vis_drop, hid_drop, bias_noise, input_noise : float
        Noise levels used by ``draw_noise`` (0.2, 0.5, 0.1, 0.0 for MNIST).
    squash : float
        The output bound (20).
    act_penalty : {'vgsn', 'code2015'}
        The form of :meth:`activation_penalty`: vgsn's, or the 2015 code's, which also
        needs a fixed (untrained) 10-way classifier layer on the last maxout layer
        (``PeaNet``'s bypassed output: orthogonal, gain ``init_scale / sqrt(units)``,
        drawn from ``rng`` after every trained weight) and its own bias noise
        ``bias_c`` (rows, 10).
    init_weights : bool
        False: zero maxout weights without the SVDs (their draws are made, so the
        output weights and ``classifier_W`` are as with the init).
    name : str
    """

    def __init__(self, n_in, rng, units=300, pool=4, n_layers=2, init_scale=0.75,
                 vis_drop=0.2, hid_drop=0.5, bias_noise=0.1, input_noise=0.0, squash=20.0,
                 act_penalty="vgsn", name="guide", init_weights=True):
        if act_penalty not in ACT_PENALTIES:
            raise ValueError(f"{name}: act_penalty must be one of {ACT_PENALTIES}, "
                             f"got {act_penalty!r}")
        for label, value in (("vis_drop", vis_drop), ("hid_drop", hid_drop)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: {label} must be in [0, 1), got {value}")
        for label, value in (("bias_noise", bias_noise), ("input_noise", input_noise)):
            if value < 0:
                raise ValueError(f"{name}: {label} must be >= 0, got {value}")
        if squash <= 0:
            raise ValueError(f"{name}: squash must be > 0, got {squash}")
        self.name, self.n_in, self.units, self.pool = name, int(n_in), int(units), int(pool)
        self.vis_drop, self.hid_drop = float(vis_drop), float(hid_drop)
        self.bias_noise, self.input_noise, self.squash = float(bias_noise), float(input_noise), float(squash)
        self.layers = []
        fan_in = self.n_in
        for i in range(int(n_layers)):
            W = orthogonal((fan_in, units * pool), init_scale / np.sqrt(fan_in), rng,
                           init_weights)
            self.layers.append(Maxout(fan_in, units, pool, f"{name}.h{i}", W=W))
            fan_in = units
        w_out = (rng.standard_normal((fan_in, 1)) * init_scale).astype(floatX)
        self.output = Dense(fan_in, 1, f"{name}.out", W=w_out)
        self.params = [p for layer in self.layers for p in layer.params] + self.output.params
        self.act_penalty = act_penalty
        self.classifier_W = None
        if act_penalty == "code2015":    # fixed: not in params, so never updated
            self.classifier_W = shared(orthogonal((fan_in, 10), init_scale / np.sqrt(fan_in), rng),
                                       name=f"{name}.cls.W")

    @property
    def weights(self):
        return [p for p in self.params if p.name.endswith(".W")]

    # ---- noise -------------------------------------------------------------
    def noise_names(self):
        """Names of the noise inputs of ``apply``, in a fixed order."""
        names = ["vis"] + [f"hid{i}" for i in range(len(self.layers))]
        names += [f"bias{i}" for i in range(len(self.layers))]
        return names + (["bias_c"] if self.act_penalty == "code2015" else [])

    def noise_widths(self):
        """name -> columns of each noise input (``vis_add`` included)."""
        width = {"vis": self.n_in, "vis_add": self.n_in, "bias_c": 10}
        width.update({f"hid{i}": self.units for i in range(len(self.layers))})
        width.update({f"bias{i}": self.units * self.pool for i in range(len(self.layers))})
        return width

    def noise_vars(self):
        """Fresh symbolic matrices, one per noise input (dict name -> variable)."""
        return {n: T.matrix(f"{self.name}.noise.{n}", dtype=floatX) for n in self.noise_names()}

    def draw_noise(self, rng, rows):
        """One draw of every noise input for ``rows`` input rows (dict of float32 arrays).

        ``vis``: input dropout mask (rows, n_in); ``hid<i>``: dropout mask on maxout
        layer i's output (rows, units); ``bias<i>``: Gaussian noise added to layer i's
        pre-activations (rows, units*pool); ``vis_add`` (only when input_noise > 0):
        additive Gaussian input noise, applied before the input mask.
        """
        noise = {"vis": dropout_mask(rng, (rows, self.n_in), self.vis_drop)}
        for i in range(len(self.layers)):
            noise[f"hid{i}"] = dropout_mask(rng, (rows, self.units), self.hid_drop)
            if self.bias_noise > 0:
                noise[f"bias{i}"] = gaussian_noise(rng, (rows, self.units * self.pool),
                                                   self.bias_noise)
            else:
                noise[f"bias{i}"] = np.zeros((rows, self.units * self.pool), floatX)
        if self.input_noise > 0:
            noise["vis_add"] = gaussian_noise(rng, (rows, self.n_in), self.input_noise)
        if self.act_penalty == "code2015":   # drawn last: vgsn's stream is unchanged
            noise["bias_c"] = gaussian_noise(rng, (rows, 10), self.bias_noise)
        return noise

    def activation_penalty(self, pre, hidden, noise=None):
        """The activation penalty (times ``lam_l2a`` in the guide's cost), symbolic.

        ``pre`` and ``hidden`` are :meth:`apply`'s pre-activations a_l (with their
        bias noise) and maxout outputs h_l.

        - 'vgsn': ``sum_l mean(a_l^2)``.
        - 'code2015' (``PeaNet._act_reg_cost`` with ``NetLayers``' ``act_l2_sum``):
          ``sum_l pool * mean(a_l^2) + mean(c^2)``, where ``mean`` runs over rows and
          the layer's ``units * pool`` columns, so the first part is ``pool`` times
          vgsn's (the code averages over ``units`` only), and
          ``c = (h_L * m_L) W_c + bias_c`` the bypassed classifier layer's output on
          the last maxout layer seen through its dropout mask m_L (the mask f sees).
        """
        base = sum(T.mean(T.square(a)) for a in pre)
        if self.act_penalty == "vgsn":
            return base
        noise = noise or {}
        h = hidden[-1]
        last = f"hid{len(self.layers) - 1}"
        if last in noise:
            h = h * noise[last]
        c = T.dot(h, self.classifier_W)
        if "bias_c" in noise:
            c = c + noise["bias_c"]
        return np.float32(self.pool) * base + T.mean(T.square(c))

    # ---- forward -----------------------------------------------------------
    def apply(self, x, noise=None):
        """Symbolic f(x) and the hidden layers' linear pre-activations.

        Parameters
        ----------
        x : symbolic (rows, n_in)
        noise : dict or None
            Symbolic noise inputs keyed as ``noise_names()`` (plus optional
            ``vis_add``); None is the noise-free guide used for evaluation.

        Returns
        -------
        f : (rows,) guide output in (-squash, squash)
        pre : list of (rows, units*pool) linear pre-activations (for their penalty)
        hidden : list of (rows, units) maxout outputs
        """
        noise = noise or {}
        h = x
        if "vis_add" in noise:
            h = h + noise["vis_add"]
        if "vis" in noise:
            h = h * noise["vis"]
        pre, hidden = [], []
        for i, layer in enumerate(self.layers):
            h, lin = layer.apply(h, noise.get(f"bias{i}"))
            pre.append(lin)
            hidden.append(h)
            if f"hid{i}" in noise:
                h = h * noise[f"hid{i}"]
        a = self.output.apply(h)[:, 0]
        squash = np.float32(self.squash)
        return squash * T.tanh(a / squash), pre, hidden

    def hidden_outputs(self, x):
        """The maxout layers' outputs for symbolic rows ``x`` (rows, n_in), without
        noise: a list of (rows, units), one per layer. For the 2015 guide these are
        the maxout layers ``[h1, h2]`` of a loaded PeaNet. ``VCGLoop.guide_hidden``
        is the compiled version (numpy in and out)."""
        if isinstance(x, np.ndarray):
            raise TypeError(f"{self.name}: hidden_outputs builds a graph from a symbolic input; "
                            "for arrays use VCGLoop.guide_hidden (nets compile nothing)")
        return self.apply(x)[2]
