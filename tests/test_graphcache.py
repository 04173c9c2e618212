"""The disk cache of rewritten graphs (vgsn.graphcache).

A function linked from a stored graph must compute exactly what a fresh compile
computes, update the caller's own shared variables, and fall back to an ordinary
compile for anything it cannot key or load. Each test uses its own cache folder.
"""
import numpy as np
import pytest

from vgsn import backend, graphcache
from vgsn.backend import T, floatX, shared
from vgsn.models import OneStageModel, VCGLoop


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VGSN_GRAPH_CACHE_DIR", str(tmp_path / "graphs"))
    monkeypatch.setenv("VGSN_GRAPH_CACHE", "1")
    before = dict(graphcache.stats)
    yield lambda: {k: graphcache.stats[k] - before[k] for k in before}


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
    f1 = backend.function(first[0], first[1], updates=first[2], name="g")
    assert cache()["misses"] == 1 and cache()["stored"] == 1
    second = _graph()
    f2 = backend.function(second[0], second[1], updates=second[2], name="g")
    assert cache()["hits"] == 1
    w1, w2 = first[3], second[3]
    for _ in range(3):
        np.testing.assert_array_equal(f1(X), f2(X))
    np.testing.assert_array_equal(w1.get_value(), w2.get_value())
    assert not np.allclose(w2.get_value(), 1.0)          # the hit updated the caller's w
    # A single (non-list) output stays single on a hit.
    x = T.matrix("x", dtype=floatX)
    g1 = backend.function([x], (x * 2).sum())
    g2 = backend.function([x], (x * 2).sum())
    assert cache()["hits"] == 2
    assert np.ndim(g2(X)) == 0 and g1(X) == g2(X) == pytest.approx(2 * X.sum())


def _tiny_loop(seed=3):
    model = OneStageModel(5, 3, q_hidden=(7, 6), p_hidden=(6, 8), x_type="bernoulli", seed=seed)
    return VCGLoop(model, steps=3, guide_units=4, guide_pool=2, momentum=0.5, seed=seed)


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
    import os
    X = np.ones((2, 3), floatX)
    a = _graph()
    fa = backend.function(a[0], a[1], updates=a[2])
    (path,) = [os.path.join(graphcache.cache_dir(), n) for n in os.listdir(graphcache.cache_dir())]
    with open(path, "wb") as f:
        f.write(b"not a pickle")
    b = _graph()
    fb = backend.function(b[0], b[1], updates=b[2])
    assert cache()["load_errors"] == 1 and cache()["stored"] == 2   # rewritten, good again
    np.testing.assert_array_equal(fa(X), fb(X))
    c = _graph()
    backend.function(c[0], c[1], updates=c[2])
    assert cache()["hits"] == 1
    assert graphcache.clear() == 1 and os.listdir(graphcache.cache_dir()) == []


def test_calls_it_cannot_key_compile_as_before(cache, monkeypatch):
    x = T.vector("x", dtype=floatX)
    y = T.vector("y", dtype=floatX)
    f = backend.function([x], x + y, givens={y: 2 * x})
    np.testing.assert_allclose(f(np.ones(2, floatX)), 3.0)
    assert cache()["bypassed"] == 1
    monkeypatch.setenv("VGSN_GRAPH_CACHE", "off")
    backend.function([x], x * 3)
    assert cache()["bypassed"] == 2 and cache()["stored"] == 0


def test_least_recently_used_graphs_go_past_the_size_limit(cache, monkeypatch):
    import os
    import time
    d = graphcache.cache_dir()
    a = _graph(c=2.0)
    backend.function(a[0], a[1], updates=a[2])
    (first,) = os.listdir(d)
    size = os.path.getsize(os.path.join(d, first))
    os.utime(os.path.join(d, first), (time.time() - 60, time.time() - 60))
    monkeypatch.setattr(graphcache, "MAX_BYTES", int(1.5 * size))
    b = _graph(c=5.0)
    backend.function(b[0], b[1], updates=b[2])
    left = os.listdir(d)
    assert len(left) == 1 and left != [first]


def test_other_config_flags_mean_another_entry(cache):
    a = _graph()
    backend.function(a[0], a[1], updates=a[2])
    with backend.config.change_flags(on_opt_error="raise"):
        b = _graph()
        backend.function(b[0], b[1], updates=b[2])
    c = _graph()
    backend.function(c[0], c[1], updates=c[2])
    assert (cache()["misses"], cache()["hits"]) == (2, 1)
