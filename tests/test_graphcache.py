"""The disk cache of rewritten graphs (vgsn.graphcache, opt-in: VGSN_GRAPH_CACHE=1).

A function linked from a stored graph must compute exactly what a fresh compile
computes, update the caller's own shared variables, and fall back to an ordinary
compile for anything it cannot key or load. Each test uses its own cache folder.
"""
import os
import warnings

import numpy as np
import pytest

from vgsn import backend, graphcache
from vgsn.backend import T, floatX, shared
from vgsn.models import OneStageModel, VCGLoop
from vgsn.nets import MaxoutGuide

cached_function = graphcache.function


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VGSN_GRAPH_CACHE_DIR", str(tmp_path / "graphs"))
    monkeypatch.setenv("VGSN_GRAPH_CACHE", "1")
    monkeypatch.setattr(graphcache, "_warned", set())
    before = graphcache.stats()
    yield lambda: {k: graphcache.stats()[k] - before[k] for k in before}


def _graph(c=2.0, op=T.mul, dim=3, value=None):
    x = T.matrix("x", dtype=floatX)
    w = shared(np.ones((dim, dim), floatX) if value is None else value, name="w")
    y = op(T.dot(x, w), np.float32(c)).sum()
    return [x], [y], [(w, w - np.float32(0.1) * T.grad(y, w))], w


def _digest(*args, **kw):
    inputs, outputs, updates, _ = _graph(*args, **kw)
    return graph_digest(inputs, outputs, updates)


def graph_digest(inputs, outputs, updates):
    return graphcache.graph_digest(inputs, outputs, [], updates)


def test_digest_is_the_graph_not_the_python_objects():
    # Built twice (new variables, new auto names): same digest. Shared values are not
    # part of it, shared types, constants and ops are.
    assert _digest() == _digest()
    assert _digest() == _digest(value=np.full((3, 3), 7.0, floatX))
    assert _digest() != _digest(c=3.0)
    assert _digest() != _digest(op=T.add)
    x = T.matrix("x", dtype=floatX)
    v = shared(np.ones(3, floatX), name="v")
    assert graph_digest([x], [(x * v).sum()], []) != graph_digest([x], [(x + v).sum()], [])
    # Updates are part of the key: same outputs, no update.
    inputs, outputs, updates, _ = _graph()
    assert graph_digest(inputs, outputs, updates) != graph_digest(inputs, outputs, [])


def test_digest_refuses_what_it_cannot_describe():
    x = T.matrix("x", dtype=floatX)
    free = T.matrix("free", dtype=floatX)
    with pytest.raises(graphcache.Uncacheable):
        graph_digest([x], [x + free], [])


def test_stored_graph_relinks_onto_the_callers_shared_variables(cache):
    X = np.arange(6, dtype=floatX).reshape(2, 3) / 6
    first = _graph()
    f1 = cached_function(first[0], first[1], updates=first[2], name="g")
    assert cache()["misses"] == 1 and cache()["stored"] == 1
    second = _graph()
    f2 = cached_function(second[0], second[1], updates=second[2], name="g")
    assert cache()["hits"] == 1
    w1, w2 = first[3], second[3]
    for _ in range(3):
        np.testing.assert_array_equal(f1(X), f2(X))
    np.testing.assert_array_equal(w1.get_value(), w2.get_value())
    assert not np.allclose(w2.get_value(), 1.0)          # the hit updated the caller's w
    # A single (non-list) output stays single on a hit.
    x = T.matrix("x", dtype=floatX)
    g1 = cached_function([x], (x * 2).sum())
    g2 = cached_function([x], (x * 2).sum())
    assert cache()["hits"] == 2
    assert np.ndim(g2(X)) == 0 and g1(X) == g2(X) == pytest.approx(2 * X.sum())


def _tiny_loop(seed=3):
    model = OneStageModel(5, 3, q_hidden=(7, 6), p_hidden=(6, 8), x_type="bernoulli", seed=seed)
    guide = MaxoutGuide(5, np.random.default_rng([seed, 2]), units=4, pool=2)
    return VCGLoop(model, guide, steps=3, momentum=0.5, seed=seed)


def test_cached_train_step_equals_a_fresh_compile(cache, monkeypatch):
    """The whole guided update (scan, BPTT, in-place updates, momentum): three updates
    from a stored graph equal three from an ordinary compile, bit for bit."""
    X = np.random.default_rng(0).random((40, 5)).astype(floatX)
    monkeypatch.setenv("VGSN_GRAPH_CACHE", "0")
    ref = _tiny_loop()
    ref_out = [ref.train_step(X[:4], X[4:10]) for _ in range(3)]
    monkeypatch.setenv("VGSN_GRAPH_CACHE", "1")
    _tiny_loop().compile(("train_step",))                 # stores the rewritten graph
    assert cache()["stored"] == 1
    hit = _tiny_loop()
    hit_out = [hit.train_step(X[:4], X[4:10]) for _ in range(3)]
    assert cache()["hits"] == 1
    for a, b in zip(ref_out, hit_out):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ref_state, hit_state = ref.get_state(), hit.get_state()
    assert ref_state.keys() == hit_state.keys()
    for k in ref_state:
        np.testing.assert_array_equal(ref_state[k], hit_state[k], err_msg=k)


def test_damaged_file_means_an_ordinary_compile(cache):
    X = np.ones((2, 3), floatX)
    a = _graph()
    fa = cached_function(a[0], a[1], updates=a[2])
    (path,) = [os.path.join(graphcache.cache_dir(), n) for n in os.listdir(graphcache.cache_dir())]
    with open(path, "wb") as f:
        f.write(b"not a pickle")
    b = _graph()
    with pytest.warns(RuntimeWarning, match="could not load the stored graph") as got:
        fb = cached_function(b[0], b[1], updates=b[2])
    assert len(got) == 1 and path in str(got[0].message)                # names the file
    assert cache()["load_errors"] == 1 and cache()["stored"] == 2   # rewritten, good again
    np.testing.assert_array_equal(fa(X), fb(X))
    c = _graph()
    cached_function(c[0], c[1], updates=c[2])
    assert cache()["hits"] == 1
    assert graphcache.clear() == 1 and os.listdir(graphcache.cache_dir()) == []


def test_calls_it_cannot_key_compile_as_before(cache, monkeypatch):
    x = T.vector("x", dtype=floatX)
    y = T.vector("y", dtype=floatX)
    f = cached_function([x], x + y, givens={y: 2 * x})
    np.testing.assert_allclose(f(np.ones(2, floatX)), 3.0)
    assert cache()["bypassed"] == 1
    monkeypatch.setenv("VGSN_GRAPH_CACHE", "off")
    cached_function([x], x * 3)
    assert cache()["bypassed"] == 2 and cache()["stored"] == 0
    monkeypatch.setenv("VGSN_GRAPH_CACHE", "maybe")
    with pytest.raises(ValueError, match="'maybe'"):
        cached_function([x], x * 3)


def test_least_recently_used_graphs_go_past_the_size_limit(cache, monkeypatch):
    import time
    d = graphcache.cache_dir()
    a = _graph(c=2.0)
    cached_function(a[0], a[1], updates=a[2])
    (first,) = os.listdir(d)
    size = os.path.getsize(os.path.join(d, first))
    os.utime(os.path.join(d, first), (time.time() - 60, time.time() - 60))
    monkeypatch.setattr(graphcache, "MAX_BYTES", int(1.5 * size))
    b = _graph(c=5.0)
    cached_function(b[0], b[1], updates=b[2])
    left = os.listdir(d)
    assert len(left) == 1 and left != [first]


def test_other_config_flags_mean_another_entry(cache):
    a = _graph()
    cached_function(a[0], a[1], updates=a[2])
    with backend.config.change_flags(on_opt_error="raise"):
        b = _graph()
        cached_function(b[0], b[1], updates=b[2])
    c = _graph()
    cached_function(c[0], c[1], updates=c[2])
    assert (cache()["misses"], cache()["hits"]) == (2, 1)


def test_off_unless_asked_for(cache, monkeypatch):
    """Opt-in: with VGSN_GRAPH_CACHE unset nothing is stored or loaded, and backend.function
    is the library's own (it never goes through the cache)."""
    monkeypatch.delenv("VGSN_GRAPH_CACHE")
    assert not graphcache.enabled()
    a = _graph()
    cached_function(a[0], a[1], updates=a[2])
    assert cache()["bypassed"] == 1 and cache()["stored"] == 0
    assert not os.path.exists(graphcache.cache_dir())
    assert backend.function is backend._lib.function
    assert graphcache.summary().startswith("graph cache: off")


def test_key_holds_vgsn_source_and_version(cache, monkeypatch):
    """Another vgsn source (an edited Op or graph builder) or version means another entry."""
    digest = graphcache.source_digest()
    assert digest == graphcache.source_digest() and len(digest) == 64
    a = _graph()
    cached_function(a[0], a[1], updates=a[2])
    monkeypatch.setattr(graphcache, "_source_digest", "0" * 64)        # as if a file changed
    b = _graph()
    cached_function(b[0], b[1], updates=b[2])
    assert (cache()["misses"], cache()["hits"]) == (2, 0)
    import vgsn
    monkeypatch.setattr(graphcache, "_source_digest", None)
    monkeypatch.setattr(vgsn, "__version__", vgsn.__version__ + ".dev1")
    assert graphcache.source_digest() != digest


def test_load_failure_warned_once_per_file(cache):
    a = _graph()
    cached_function(a[0], a[1], updates=a[2])
    (name,) = os.listdir(graphcache.cache_dir())
    path = os.path.join(graphcache.cache_dir(), name)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for _ in range(3):                      # damaged again before each call
            with open(path, "wb") as f:
                f.write(b"\x80garbage")
            b = _graph()
            cached_function(b[0], b[1], updates=b[2])
    mine = [w for w in got if "vgsn.graphcache" in str(w.message)]
    assert len(mine) == 1 and path in str(mine[0].message)
    assert cache()["load_errors"] == 3
    line = graphcache.summary()
    assert line.startswith("graph cache: on") and graphcache.cache_dir() in line
    assert f"{graphcache.stats()['load_errors']} load errors" in line      # process totals


def test_only_the_c_linker_is_served(cache):
    x = T.vector("x", dtype=floatX)
    py = backend._lib.compile.mode.Mode(linker="py", optimizer="fast_run")
    assert graphcache._c_linker(backend.compile_mode())
    if backend.NAME == "pytensor":
        for other in ("JAX", "NUMBA"):
            try:
                mode = backend._lib.compile.mode.get_mode(other)
            except Exception:               # jax / numba not installed
                continue
            assert not graphcache._c_linker(mode)
    f = cached_function([x], x * 2, mode=py)
    np.testing.assert_allclose(f(np.ones(2, floatX)), 2.0)
