"""The 2015 author code's files: written here in exactly its layout from known arrays,
loaded into vgsn and checked against an independent numpy forward pass; mismatches
and code-running pickles refused; export then load gives identical arrays."""
import gzip
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from scipy.special import expit

from vgsn.data import safe_pickle
from vgsn.backend import T, floatX, function
from vgsn.compat2015.convert import (
    Function2015, Orig2015Error, export_2015_guide, export_2015_infnet, export_2015_model,
    load_2015_guide, load_2015_model, read_2015_infnet, read_2015_peanet, set_infnet_from_2015)
from vgsn.compat2015.compare import main as compare_main
from vgsn.model.nets import InfNet

X_DIM, Z_DIM, Q_HID, P_HID = 12, 3, (8, 8), (8, 6)
UNITS, POOL, N_CLASSES = 5, 3, 4
B = 6.0                      # logvar_bound
LV_B = 0.9                   # p's sigma[0]['b'][0]: the shared log-variance parameter
F32 = np.float32
RNG = np.random.default_rng(2015)


# ---- files in the 2015 layout, written without vgsn ---------------------------

def _relu_actfun():
    """A function that pickles as the global ``NetLayers.relu_actfun``."""
    def relu_actfun(x):
        return x
    relu_actfun.__module__, relu_actfun.__qualname__ = "NetLayers", "relu_actfun"
    return relu_actfun


def _layer(n_in, n_out, scale=1.0):
    return {"W": (scale * RNG.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(F32),
            "b": (0.2 + 0.3 * RNG.standard_normal(n_out)).astype(F32),
            "b_in": RNG.standard_normal(n_in).astype(F32),      # unused by the forward pass
            "s_in": RNG.standard_normal(n_in).astype(F32)}


def _infnet_objects(n_in, hidden, n_out, lv_b=None):
    sizes = [n_in] + list(hidden)
    params = {"activation": _relu_actfun(), "bias_noise": 0.0, "build_theano_funcs": True,
              "hid_drop": 0.0, "init_scale": 1.4, "input_noise": 0.0, "lam_l2a": 0.0,
              "mu_config": [hidden[-1], n_out], "shared_config": sizes,
              "sigma_config": [hidden[-1], n_out], "vis_drop": 0.0}
    sigma = _layer(hidden[-1], n_out, 0.5)
    if lv_b is not None:
        sigma["b"][0] = lv_b
    arrays = {"shared": [_layer(a, b, 1.4) for a, b in zip(sizes[:-1], sizes[1:])],
              "mu": [_layer(hidden[-1], n_out, 1.4)],
              "sigma": [sigma, {"sigma_scale": np.ones(1, F32),
                                "kld_mean": np.array([7.5], F32)}]}
    return [1.0, params, arrays]


def _peanet_objects():
    params = {"hid_drop": 0.5, "init_scale": 0.75, "lam_l2a": 0.01,
              "proto_configs": [[X_DIM, (UNITS, POOL), (UNITS, POOL), N_CLASSES]],
              "spawn_configs": [{"do_dropout": True, "bias_noise": 0.1, "input_noise": 0.05,
                                 "proto_key": 0}],
              "spawn_weights": [1.0], "vis_drop": 0.2}
    layers = [_layer(X_DIM, UNITS * POOL), _layer(UNITS, UNITS * POOL), _layer(UNITS, N_CLASSES)]
    return [params, layers]


def _dumps(objects, writer):
    """Consecutive protocol-2 pickles: 'py3' = the stdlib pickler (numpy arrays via
    _codecs.encode latin1 bytes), 'py2' = what Python 2's cPickle wrote (str records,
    numpy.core names). Both name NetLayers.relu_actfun, which is then forgotten."""
    module = types.ModuleType("NetLayers")
    module.relu_actfun = next((o["activation"] for o in objects
                               if isinstance(o, dict) and "activation" in o), None)
    sys.modules["NetLayers"] = module
    try:
        dump = (lambda o: pickle.dumps(o, protocol=2)) if writer == "py3" else safe_pickle.dumps_py2
        return b"".join(dump(o) for o in objects)
    finally:
        del sys.modules["NetLayers"]


def _write(path, objects, writer="py2"):
    data = _dumps(objects, writer)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("orig2015")
    objs = {"q": _infnet_objects(X_DIM, Q_HID, Z_DIM),
            "p": _infnet_objects(Z_DIM, P_HID, X_DIM, lv_b=LV_B),
            "guide": _peanet_objects()}
    paths = {}
    for name, o in objs.items():
        for writer in ("py2", "py3"):
            for suffix in ("pkl", "pkl.gz"):
                paths[name, writer, suffix] = _write(d / f"{name}_{writer}.{suffix}", o, writer)
    return {"objects": objs, "paths": paths, "dir": d}


@pytest.fixture(scope="module")
def images():
    return RNG.random((9, X_DIM)).astype(F32)


# ---- independent numpy forward pass --------------------------------------------

def np_infnet(X, arrays):
    h = np.asarray(X, np.float64)
    for layer in arrays["shared"]:
        h = np.maximum(h @ layer["W"] + layer["b"], 0.0)
    mu, sigma = arrays["mu"][0], arrays["sigma"][0]
    return h @ mu["W"] + mu["b"], h @ sigma["W"] + sigma["b"]


def np_terms(X, q_arrays, p_arrays, x_type, eps=None):
    """(nll, kl) per row with z = mean (+ exp(lv/2) eps when eps is given)."""
    mu, lv = np_infnet(X, q_arrays)
    z = mu if eps is None else mu + np.exp(0.5 * lv) * eps
    logits, _ = np_infnet(z, p_arrays)
    x_hat = expit(logits)
    if x_type == "bernoulli":
        nll = -np.sum(X * np.log(x_hat) + (1 - X) * np.log(1 - x_hat), axis=1)
    else:
        lv_x = B * np.tanh(p_arrays["sigma"][0]["b"][0] / B)
        nll = 0.5 * np.sum(np.log(2 * np.pi) + lv_x + (X - x_hat) ** 2 * np.exp(-lv_x), axis=1)
    kl = 0.5 * np.sum(-lv + np.exp(lv) + mu ** 2 - 1.0, axis=1)
    return nll, kl


def np_maxout(X, layers):
    """Unit j of a (units, pool) layer = max of columns pool*j .. pool*j + pool-1."""
    h, out = np.asarray(X, np.float64), []
    for layer in layers[:-1]:
        lin = h @ layer["W"] + layer["b"]
        h = lin.reshape(len(lin), -1, POOL).max(axis=2)
        out.append(h)
    return out


# ---- the files and reading them ------------------------------------------------

def test_files_are_in_the_2015_layout(files):
    data = files["paths"]["q", "py2", "pkl"].read_bytes()
    assert data.startswith(b"\x80\x02") and data.count(b"\x80\x02") >= 3
    assert b"cNetLayers\nrelu_actfun\n" in data and b"cnumpy.core.multiarray\n_reconstruct\n" in data
    py3 = files["paths"]["q", "py3", "pkl"].read_bytes()
    assert b"cNetLayers\nrelu_actfun\n" in py3 and b"_codecs\nencode" in py3
    assert gzip.decompress(files["paths"]["q", "py2", "pkl.gz"].read_bytes()) == data
    assert "NetLayers" not in sys.modules


@pytest.mark.parametrize("writer", ["py2", "py3"])
@pytest.mark.parametrize("suffix", ["pkl", "pkl.gz"])
def test_read_gives_the_written_arrays(files, writer, suffix):
    for name in ("q", "p"):
        f = read_2015_infnet(files["paths"][name, writer, suffix])
        prior, params, arrays = files["objects"][name]
        assert f.prior_sigma == prior and f.params["shared_config"] == params["shared_config"]
        assert f.params["activation"] == Function2015("NetLayers", "relu_actfun")
        assert (f.sigma_scale, f.kld_mean) == (1.0, 7.5)
        for group in ("shared", "mu", "sigma"):
            for got, want in zip(getattr(f, group), arrays[group]):
                for key in ("W", "b", "b_in", "s_in"):
                    assert got[key].dtype == F32 and np.array_equal(got[key], want[key])
    g = read_2015_peanet(files["paths"]["guide", writer, suffix])
    params, layers = files["objects"]["guide"]
    assert (g.n_in, g.units, g.pool, g.n_layers, g.n_classes) == (X_DIM, UNITS, POOL, 2, N_CLASSES)
    assert (g.vis_drop, g.hid_drop, g.bias_noise, g.input_noise, g.init_scale, g.lam_l2a) == \
        (0.2, 0.5, 0.1, 0.05, 0.75, 0.01)
    for got, want in zip(g.layers + [g.classifier], layers):
        assert np.array_equal(got["W"], want["W"]) and np.array_equal(got["b"], want["b"])


def test_loading_never_imports_the_2015_module(files, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "NetLayers.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef relu_actfun(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    read_2015_infnet(files["paths"]["q", "py3", "pkl.gz"])
    assert not marker.exists() and "NetLayers" not in sys.modules


# ---- vgsn's outputs against numpy ------------------------------------------------

@pytest.fixture(scope="module")
def gaussian_model(files):
    return load_2015_model(files["paths"]["q", "py2", "pkl.gz"], files["paths"]["p", "py3", "pkl"],
                           x_type="gaussian", logvar_bound=B)


def test_gaussian_pair_matches_numpy(files, gaussian_model, images):
    m, X = gaussian_model, images
    q_arrays, p_arrays = files["objects"]["q"][2], files["objects"]["p"][2]
    assert (m.x_dim, m.z_dim, m.config["q_hidden"], m.config["p_hidden"]) == \
        (X_DIM, Z_DIM, Q_HID, P_HID)
    assert m.config["init_scale"] == 1.4 and m.config["logvar_bound"] == B
    mu, lv = m.encode(X)
    mu_ref, lv_ref = np_infnet(X, q_arrays)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lv, lv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.decode(mu), expit(np_infnet(mu_ref, p_arrays)[0]),
                               rtol=1e-5, atol=1e-6)
    assert m.p.logvar_param.get_value() == F32(LV_B)           # copied as is: same parameterisation
    np.testing.assert_allclose(m.shared_logvar(), B * np.tanh(LV_B / B), rtol=1e-6)
    nll, kl = m.free_energy_terms(X, use_mean=True)
    nll_ref, kl_ref = np_terms(X, q_arrays, p_arrays, "gaussian")
    np.testing.assert_allclose(nll, nll_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(kl, kl_ref, rtol=1e-5, atol=1e-5)
    eps = np.random.default_rng(7).standard_normal((len(X), Z_DIM), dtype=np.float32)
    nll_s, kl_s = m.free_energy_terms(X, n_samples=1, rng=np.random.default_rng(7))
    np.testing.assert_allclose(nll_s, np_terms(X, q_arrays, p_arrays, "gaussian", eps)[0],
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(kl_s, kl_ref, rtol=1e-5, atol=1e-5)


def test_bernoulli_pair_matches_numpy_and_ignores_p_sigma_head(files, images, tmp_path):
    objs = _infnet_objects(Z_DIM, P_HID, X_DIM, lv_b=LV_B)
    objs[2] = dict(objs[2], shared=files["objects"]["p"][2]["shared"],
                   mu=files["objects"]["p"][2]["mu"])
    objs[2]["sigma"][0]["W"] *= 100.0                          # p's unused head: no effect
    p_path = _write(tmp_path / "p_bern.pkl", objs)
    m = load_2015_model(files["paths"]["q", "py3", "pkl"], p_path, x_type="bernoulli")
    assert m.p.logvar_param is None
    nll, kl = m.free_energy_terms(images, use_mean=True)
    nll_ref, kl_ref = np_terms(images, files["objects"]["q"][2], objs[2], "bernoulli")
    np.testing.assert_allclose(nll, nll_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(kl, kl_ref, rtol=1e-5, atol=1e-5)


def test_guide_maxout_layers_match_numpy(files, images):
    path = files["paths"]["guide", "py2", "pkl.gz"]
    guide = load_2015_guide(path)
    assert (guide.n_in, guide.units, guide.pool, len(guide.layers)) == (X_DIM, UNITS, POOL, 2)
    assert (guide.vis_drop, guide.hid_drop, guide.bias_noise, guide.input_noise) == \
        (0.2, 0.5, 0.1, 0.05)
    x = T.matrix("x", dtype=floatX)          # nets compile nothing: the test compiles
    h1, h2 = function([x], guide.hidden_outputs(x))(images)
    r1, r2 = np_maxout(images, files["objects"]["guide"][1])
    np.testing.assert_allclose(h1, r1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h2, r2, rtol=1e-5, atol=1e-5)
    fresh = load_2015_guide(path, rng=np.random.default_rng(0))   # output unit: fresh, seeded
    assert guide.output.W.get_value().shape == (UNITS, 1)
    assert np.array_equal(guide.output.W.get_value(), fresh.output.W.get_value())
    assert not np.any(guide.output.b.get_value())


def test_guided_loop_from_2015_files(files, images):
    """``VCGLoop(load_2015_model(q, p), guide=load_2015_guide(g))``: the loop trains the
    loaded arrays themselves; its noise-free guide is the 2015 PeaNet's maxout stack
    with vgsn's squashed output unit, and one update moves both sides."""
    from vgsn.model.vcg import VCGLoop
    model = load_2015_model(files["paths"]["q", "py2", "pkl"], files["paths"]["p", "py2", "pkl"],
                            x_type="gaussian", logvar_bound=B)
    guide = load_2015_guide(files["paths"]["guide", "py3", "pkl"])
    loop = VCGLoop(model, guide=guide, steps=2, data_rows=len(images), seed=1)
    assert loop.params == model.params and loop.guide_params == guide.params
    r1, h2 = np_maxout(images, files["objects"]["guide"][1])
    for got, ref in zip(loop.guide_hidden(images), (r1, h2)):     # the loop's compiled form
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    a = h2 @ guide.output.W.get_value() + guide.output.b.get_value()
    np.testing.assert_allclose(loop.guide_output(images), 20 * np.tanh(a[:, 0] / 20),
                               rtol=1e-5, atol=1e-5)
    before = loop.get_state()
    out = loop.train_step(images[:3], images)
    assert all(np.isfinite(v) for v in out.values() if isinstance(v, float))
    after = loop.get_state()
    for p in (model.q.weights[0], model.p.weights[-1], guide.layers[0].W, guide.output.W):
        assert not np.array_equal(before[p.name], after[p.name]), p.name


def test_compare_cli_prints_the_terms(files, gaussian_model, images, tmp_path, capsys):
    np.save(tmp_path / "x.npy", images)
    out = io.StringIO()
    res = compare_main(["--q", str(files["paths"]["q", "py2", "pkl.gz"]),
                        "--p", str(files["paths"]["p", "py3", "pkl"]), "--images",
                        str(tmp_path / "x.npy"), "--x-type", "gaussian", "--samples", "2"], out=out)
    nll_ref, kl_ref = np_terms(images, files["objects"]["q"][2], files["objects"]["p"][2], "gaussian")
    np.testing.assert_allclose(res["nll_mean_z"], nll_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(res["kl"], kl_ref, rtol=1e-5, atol=1e-5)
    text = out.getvalue()
    mean_line = [ln for ln in text.splitlines() if ln.strip().startswith("mean")][0]
    assert f"{np.mean(nll_ref):.4f}" in mean_line and f"{np.mean(kl_ref):.4f}" in mean_line
    assert "shared log-variance" in text and "nll(2 z)" in text
    # A bad input is one line naming the file and the fix, exit status 2 (README).
    capsys.readouterr()
    x_dim = files["objects"]["q"][1]["shared_config"][0]
    pair = ["--q", str(files["paths"]["q", "py2", "pkl.gz"]),
            "--p", str(files["paths"]["p", "py3", "pkl"]), "--x-type", "gaussian"]
    swapped = ["--q", str(files["paths"]["p", "py2", "pkl"]),
               "--p", str(files["paths"]["q", "py2", "pkl"]), "--images", str(tmp_path / "x.npy")]
    bad = tmp_path / "bad.npy"
    for argv, array, needle in [
            (swapped, None, "pixels per image, but q expects"),
            (pair, images[:, :x_dim - 1], f"{x_dim - 1} pixels per image, but q expects {x_dim}"),
            (pair, images * 3 + 0.5, "values outside [0, 1] (min "),
            (pair, images - 1.5, "Fix: scale the images to [0, 1]")]:
        if array is not None:
            np.save(bad, array)
            argv = argv + ["--images", str(bad)]
        with pytest.raises(SystemExit) as exit_:
            compare_main(argv, out=io.StringIO())
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"python -m vgsn.compare: error: {argv[-1]}: ")
        assert needle in err[0] and "Fix: " in err[0], err[0]
    with pytest.raises(SystemExit) as exit_:
        compare_main(swapped + ["--rows", "0"], out=io.StringIO())
    assert exit_.value.code == 2 and "--rows 0: must be >= 1" in capsys.readouterr().err


def test_compare_infers_the_output_model_reads_npz_and_diffs_a_reference(files, images,
                                                                         tmp_path, capsys):
    q = str(files["paths"]["q", "py2", "pkl.gz"])
    p = str(files["paths"]["p", "py3", "pkl"])
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(len(images)))
    saved = tmp_path / "out.npz"
    res = compare_main(["--q", q, "--p", p, "--images", str(tmp_path / "x.npz"),
                        "--samples", "0", "--save", str(saved)], out=io.StringIO())
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "assumed gaussian (p's shared log-variance parameter is 0.9" in err[0]
    nll_ref, kl_ref = np_terms(images, files["objects"]["q"][2], files["objects"]["p"][2],
                               "gaussian")
    np.testing.assert_allclose(res["nll_mean_z"], nll_ref, rtol=1e-5, atol=1e-4)
    # a reference that differs by 0.5 in row 3 of kl
    with np.load(saved) as f:
        ref = {k: f[k] for k in f.files}
    ref["kl"] = ref["kl"].copy()
    ref["kl"][3] += 0.5
    np.savez(tmp_path / "ref.npz", **ref)
    out = io.StringIO()
    res = compare_main(["--q", q, "--p", p, "--images", f"{tmp_path / 'x.npz'}:images",
                        "--samples", "0", "--x-type", "gaussian", "--ref",
                        str(tmp_path / "ref.npz")], out=out)
    assert capsys.readouterr().err == ""                      # told: no warning
    assert res["ref_max_diff"]["nll_mean_z"] == 0.0
    assert res["ref_max_diff"]["kl"] == pytest.approx(0.5, abs=1e-6)
    assert "kl: largest difference 0.5 (row 3:" in out.getvalue()
    # a Bernoulli pair: p's log-variance parameter never trained, still 0
    objs = _infnet_objects(Z_DIM, P_HID, X_DIM, lv_b=0.0)
    bern = _write(tmp_path / "p_bern.pkl", objs)
    compare_main(["--q", q, "--p", str(bern), "--images", str(tmp_path / "x.npz"),
                  "--samples", "0"], out=io.StringIO())
    assert "assumed bernoulli (p's shared log-variance parameter is at its initial 0" in \
        capsys.readouterr().err
    np.savez(tmp_path / "two.npz", a=images, b=images)
    with pytest.raises(SystemExit):
        compare_main(["--q", q, "--p", p, "--images", str(tmp_path / "two.npz")],
                     out=io.StringIO())
    assert "a .npz archive of a, b; name the images array: " in capsys.readouterr().err


# ---- mismatches and malicious files ---------------------------------------------

def _broken(tmp_path, name, change, base="q"):
    objs = (_infnet_objects(X_DIM, Q_HID, Z_DIM) if base == "q" else _peanet_objects())
    change(objs)
    return _write(tmp_path / name, objs)


@pytest.mark.parametrize("change, message", [
    (lambda o: o[2]["shared"][1].update(W=np.zeros((8, 7), F32)),
     r"\['shared'\]\[1\]\['W'\] has shape \(8, 7\), expected \(8, 8\)"),
    (lambda o: o[2]["sigma"][0].update(b=np.zeros(4, F32)),
     r"\['sigma'\]\[0\]\['b'\] has shape \(4,\)"),
    (lambda o: o[1].update(shared_config=[X_DIM, (8, 2), 8]),
     r"params\['shared_config'\]\[1\] is \(8, 2\), a maxout layer"),
    (lambda o: o[1].update(mu_config=[7, Z_DIM]), r"mu_config'\]\[0\] = 7 does not match"),
    (lambda o: o[1].update(mu_config=[8, 5, Z_DIM]), r"single linear layers"),
    (lambda o: o[2]["shared"].pop(), r"'shared' has 1 layers but shared_config"),
    (lambda o: o[2]["mu"][0].pop("W"), r"\['mu'\]\[0\] has no 'W'"),
    (lambda o: o[1].pop("sigma_config"), r"params has no 'sigma_config'"),
    (lambda o: o.pop(0), r"holds 2 pickles; a 2015 InfNet file holds 3"),
])
def test_infnet_mismatch_is_a_clear_error(tmp_path, change, message):
    path = _broken(tmp_path, "bad.pkl", change)
    with pytest.raises(Orig2015Error, match=message) as info:
        read_2015_infnet(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("change, message", [
    (lambda o: o[0].update(proto_configs=[[X_DIM, (UNITS, POOL), 6, N_CLASSES]]),
     r"\[2\] is 6, not a maxout layer"),
    (lambda o: o[0].update(proto_configs=[[X_DIM, (UNITS, POOL), (4, POOL), N_CLASSES]]),
     r"the same \(units, pool\)"),
    (lambda o: o[1][1].update(W=np.zeros((UNITS, 9), F32)), r"layers\[1\]\['W'\] has shape \(5, 9\)"),
    (lambda o: o[0]["spawn_configs"].append({"proto_key": 0}), r"exactly one spawn net"),
])
def test_peanet_mismatch_is_a_clear_error(tmp_path, change, message):
    with pytest.raises(Orig2015Error, match=message):
        read_2015_peanet(_broken(tmp_path, "bad_guide.pkl", change, base="guide"))


def test_pair_and_target_mismatch(files, tmp_path):
    p4 = _write(tmp_path / "p4.pkl", _infnet_objects(4, P_HID, X_DIM))
    q = files["paths"]["q", "py2", "pkl"]
    with pytest.raises(Orig2015Error, match=r"do not fit together") as info:
        load_2015_model(q, p4)
    assert str(q) in str(info.value) and str(p4) in str(info.value)
    net = InfNet(X_DIM, (8, 7), Z_DIM, "q", np.random.default_rng(0))
    with pytest.raises(Orig2015Error, match=r"does not match vgsn's q: 12 -> \[8, 7\] -> 3"):
        set_infnet_from_2015(net, q)
    with pytest.raises(Orig2015Error, match="looks like a PeaNet"):
        read_2015_infnet(files["paths"]["guide", "py2", "pkl"])
    soft = _infnet_objects(X_DIM, Q_HID, Z_DIM)
    soft[1]["activation"] = Function2015("NetLayers", "softplus_actfun")
    with pytest.raises(Orig2015Error, match="relu_actfun"):
        read_2015_infnet(_write(tmp_path / "soft.pkl", soft))


class _RunsCode:
    def __init__(self, *call):
        self.call = call

    def __reduce__(self):
        return self.call[0], self.call[1:]


@pytest.mark.parametrize("call", ["system", "eval", "import"])
def test_pickle_that_runs_code_is_refused(tmp_path, call):
    marker = tmp_path / "pwned"
    evil = {"system": (os.system, f"touch {marker}"),
            "eval": (eval, f"open({str(marker)!r}, 'w')"),
            "import": (__import__, "NetLayers")}[call]
    objs = _infnet_objects(X_DIM, Q_HID, Z_DIM)
    objs[1]["activation"] = _RunsCode(*evil)
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(b"".join(pickle.dumps(o, protocol=2) for o in objs)))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global") as info:
        read_2015_infnet(path)
    assert str(path) in str(info.value)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_2015_model(path, path)
    assert not marker.exists()


# ---- export ---------------------------------------------------------------------

def test_export_then_load_gives_identical_arrays(gaussian_model, tmp_path):
    m = gaussian_model
    q_path, p_path = export_2015_model(m, tmp_path / "q.pkl", tmp_path / "p.pkl.gz", kld_mean=2.5)
    data = open(q_path, "rb").read()
    assert b"cNetLayers\nrelu_actfun\n" in data and b"cnumpy.core.multiarray\n_reconstruct\n" in data
    assert b"vgsn" not in data and b"_codecs" not in data
    objs = safe_pickle.load_all(gzip.open(p_path), placeholders={
        ("NetLayers", "relu_actfun"): "relu"})
    assert len(objs) == 3 and objs[0] == 1.0
    assert objs[1] == {"activation": "relu", "bias_noise": 0.0, "build_theano_funcs": True,
                       "hid_drop": 0.0, "init_scale": 1.4, "input_noise": 0.0, "lam_l2a": 0.0,
                       "mu_config": [6, X_DIM], "shared_config": [Z_DIM, 8, 6],
                       "sigma_config": [6, X_DIM], "vis_drop": 0.0}
    sigma = objs[2]["sigma"]
    assert not np.any(sigma[0]["W"]) and sigma[0]["b"][0] == F32(LV_B) and not np.any(sigma[0]["b"][1:])
    assert sigma[1]["sigma_scale"].tolist() == [1.0] and sigma[1]["kld_mean"].tolist() == [0.0]
    for layer in objs[2]["shared"] + objs[2]["mu"] + sigma[:1]:
        assert layer["W"].dtype == F32 and not np.any(layer["b_in"])
        assert np.all(layer["s_in"] == F32(0.541325))
    q = read_2015_infnet(q_path)
    assert q.kld_mean == 2.5
    back = load_2015_model(q_path, p_path, x_type="gaussian")
    state, state_back = m.get_state(), back.get_state()
    for var in m.params:
        assert np.array_equal(state[var.name], state_back[var.name]), var.name
    again = tmp_path / "q_again.pkl"                     # 2015 file -> vgsn -> 2015 file
    export_2015_infnet(back.q, again, init_scale=1.4, kld_mean=2.5)
    assert again.read_bytes() == data                    # byte for byte


def test_guide_export_then_load_gives_identical_arrays(files, tmp_path):
    guide = load_2015_guide(files["paths"]["guide", "py3", "pkl"])
    path = export_2015_guide(guide, tmp_path / "g.pkl.gz", init_scale=0.75, lam_l2a=0.01,
                             n_classes=N_CLASSES)
    f = read_2015_peanet(path)
    assert f.params["proto_configs"] == [[X_DIM, (UNITS, POOL), (UNITS, POOL), N_CLASSES]]
    assert (f.vis_drop, f.hid_drop, f.bias_noise, f.input_noise) == (0.2, 0.5, 0.1, 0.05)
    assert not np.any(f.classifier["W"])
    back = load_2015_guide(path)
    for a, b in zip(guide.params[:-2], back.params[:-2]):   # all but the fresh output unit
        assert np.array_equal(a.get_value(), b.get_value()), a.name
    for got, want in zip(f.layers, files["objects"]["guide"][1]):
        assert np.array_equal(got["W"], want["W"]) and np.array_equal(got["b"], want["b"])


_PY2_READER = r'''
import cPickle, json, struct, sys, types
class ndarray(object):
    def __setstate__(self, st):
        self.shape, self.dtype, self.raw = st[1], st[2].args[0], st[4]
class dtype(object):
    def __init__(self, *args):
        self.args = args
    def __setstate__(self, st):
        pass
def _reconstruct(cls, shape, code):
    return cls()
np = types.ModuleType('numpy'); np.ndarray, np.dtype = ndarray, dtype
core = types.ModuleType('numpy.core'); ma = types.ModuleType('numpy.core.multiarray')
ma._reconstruct = _reconstruct
nl = types.ModuleType('NetLayers')
def relu_actfun(x):
    return x
nl.relu_actfun = relu_actfun
sys.modules.update({'numpy': np, 'numpy.core': core, 'numpy.core.multiarray': ma, 'NetLayers': nl})
def enc(o):
    if isinstance(o, ndarray):
        n = len(o.raw) // 4
        return {'shape': list(o.shape), 'dtype': o.dtype, 'sum': sum(struct.unpack('<%df' % n, o.raw))}
    if isinstance(o, dict):
        assert all(type(k) is str for k in o), o.keys()
        return dict((k, enc(v)) for k, v in o.items())
    if isinstance(o, tuple):
        return {'tuple': [enc(v) for v in o]}
    if isinstance(o, list):
        return [enc(v) for v in o]
    if o is relu_actfun:
        return 'NetLayers.relu_actfun'
    return o
f = open(sys.argv[1], 'rb')
out = []
while True:
    try:
        out.append(enc(cPickle.load(f)))
    except EOFError:
        break
print(json.dumps(out))
'''


def _python2():
    for cand in (os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python"), shutil.which("python2")):
        if cand and os.path.exists(cand):
            return cand
    return None


@pytest.mark.skipif(_python2() is None, reason="no Python 2.7 here")
def test_python2_cpickle_reads_the_export(gaussian_model, tmp_path):
    """What the 2015 code does with a file: cPickle.load until EOF, in Python 2."""
    q_path = export_2015_infnet(gaussian_model.q, tmp_path / "q.pkl")
    g_path = export_2015_guide(load_2015_guide(_write(tmp_path / "g0.pkl", _peanet_objects())),
                               tmp_path / "g.pkl")
    script = tmp_path / "read2.py"
    script.write_text(_PY2_READER)
    run = lambda p: json.loads(subprocess.run([_python2(), str(script), str(p)], check=True,  # noqa: E731
                                              capture_output=True, text=True).stdout)
    prior, params, arrays = run(q_path)
    assert prior == 1.0 and params["activation"] == "NetLayers.relu_actfun"
    assert params["shared_config"] == [X_DIM, 8, 8] and params["mu_config"] == [8, Z_DIM]
    W0 = arrays["shared"][0]["W"]
    assert W0["shape"] == [X_DIM, 8] and W0["dtype"] == "f4"
    assert W0["sum"] == pytest.approx(float(gaussian_model.q.hidden_layers[0].W.get_value()
                                            .astype(np.float64).sum()), rel=1e-6)
    assert arrays["sigma"][1]["sigma_scale"]["shape"] == [1]
    g_params, g_layers = run(g_path)
    assert g_params["proto_configs"] == [[X_DIM, {"tuple": [UNITS, POOL]},
                                          {"tuple": [UNITS, POOL]}, 10]]
    assert [l["W"]["shape"] for l in g_layers] == [[X_DIM, UNITS * POOL], [UNITS, UNITS * POOL],
                                                   [UNITS, 10]]


def test_load_2015_loop_is_the_2015_walk_phase_of_the_files(tmp_path):
    """Three 2015 files -> ``load_2015_loop``: the 2015 walk-phase settings, the files'
    arrays (the guide's 10-way layer as the activation penalty's), the given output
    unit; its update terms equal those of the loop the files were written from."""
    from vgsn import OneStageModel, VCGLoop, load_2015_loop
    from vgsn.model.nets import MaxoutGuide
    rng = np.random.default_rng(5)
    model = OneStageModel(X_DIM, 3, q_hidden=(9,), p_hidden=(8,), batch_repeat=5, l2=1e-4,
                          l2_on="all", lam_kl=1.2, seed=3)
    guide = MaxoutGuide(X_DIM, rng, units=UNITS, pool=POOL, act_penalty="code2015")
    guide.output.b.set_value(np.array([0.3], np.float32))
    q, p = export_2015_model(model, tmp_path / "q.pkl", tmp_path / "p.pkl")
    g = export_2015_guide(guide, tmp_path / "g.pkl", lam_l2a=0.01)
    assert np.array_equal(read_2015_peanet(g).classifier["W"], guide.classifier_W.get_value())
    loop = load_2015_loop(q, p, g, disc_W=guide.output.W.get_value(),
                          disc_b=guide.output.b.get_value())
    assert (loop.steps, loop.walkback, loop.step_decay, loop.gen_loss, loop.guide_loss,
            loop.chain_gamma, loop.momentum, loop.max_norm) == (
        6, False, 0.0, "elastic", "code2015", False, 0.5, 10.0)
    assert loop.hyper.values() == pytest.approx(dict(
        lr_gen=4e-4, lr_guide=4e-4, gen_weight=25.0, guide_weight=25.0, lam_l2d=0.05,
        lam_l2a=0.01))
    assert loop.model.hyper["lam_kl"] == pytest.approx(1.2)
    assert loop.model.hyper["l2"] == pytest.approx(1e-4)
    assert loop.model.config["l2_on"] == "all" and loop.guide.act_penalty == "code2015"
    same = VCGLoop(model, guide, steps=6, step_decay=0.0, guide_loss="code2015",
                   chain_gamma=False)
    X0 = rng.uniform(0, 1, (4, X_DIM)).astype(np.float32)
    X_data = rng.uniform(0, 1, (6, X_DIM)).astype(np.float32)
    eps = rng.standard_normal((6, 20, 3)).astype(np.float32)
    got, want = loop.update_terms(X0, X_data, eps=eps), same.update_terms(X0, X_data, eps=eps)
    for name in ("f", "nll", "kl", "guide_cost", "gen_cost", "act_penalty"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
    for name, grad in want["grads"].items():
        np.testing.assert_allclose(got["grads"][name], grad, rtol=1e-4, atol=1e-7, err_msg=name)
    with pytest.raises(ValueError, match="disc_W must have 5 values"):
        load_2015_loop(q, p, g, disc_W=np.zeros(3))
