"""Noise drawn ahead (vgsn.model.noise): the same numbers as drawn in place, and the generator
left where an in-place consumer would have it."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vgsn.model import noise
from vgsn.model.layers import _THREADED_MIN, _fill_rows, dropout_mask, gaussian_noise


def _update_noise(rng, rows, cols):
    """One 'update' of noise in the guide's pattern: a direct draw, then block-filled arrays
    on both sides of the threaded-size threshold."""
    eps = rng.standard_normal((3, rows, 4), dtype=np.float32)
    big = max(cols, _THREADED_MIN // rows + 1)
    return [eps, dropout_mask(rng, (rows, cols), 0.2), gaussian_noise(rng, (rows, big), 0.1),
            dropout_mask(rng, (rows, 7), 0.5), gaussian_noise(rng, (rows, 3), 1.0)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_deferred_fills_give_the_same_arrays():
    ref = _update_noise(np.random.default_rng(5), 64, 30)
    rng = np.random.default_rng(5)
    with ThreadPoolExecutor(3) as pool:
        with noise.deferred_fills(pool) as jobs:
            got = _update_noise(rng, 64, 30)
        assert len(jobs) == 8            # 4 block-filled arrays x 2 blocks each
        noise.wait_all(jobs)
    _same(ref, got)
    # and the generator is where the in-place draw left it
    rng_ref = np.random.default_rng(5)
    _update_noise(rng_ref, 64, 30)
    assert rng.random() == rng_ref.random()


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_noise_ahead_matches_in_place_draws_through_cancel_and_shape_changes(ahead):
    keys = [(16, 5)] * 4 + [(8, 5)] * 3 + [(16, 5)] * 2
    plain_rng = np.random.default_rng(11)
    ref = [_update_noise(plain_rng, *k) for k in keys]

    rng = np.random.default_rng(11)
    na = noise.NoiseAhead(rng, lambda r, c: _update_noise(rng, r, c), ahead, threads=2)
    try:
        got = []
        for i, k in enumerate(keys):
            got.append(na.take(*k))
            assert na.queued() == ahead
            if i == 5:
                # Another user of the generator (a checkpoint, a sampler) cancels first:
                # the generator then is exactly where the in-place consumer had it.
                na.cancel()
                assert na.queued() == 0
                check = np.random.default_rng(11)
                for kk in keys[:i + 1]:
                    _update_noise(check, *kk)
                assert rng.bit_generator.state == check.bit_generator.state
        for a, b in zip(ref, got):
            _same(a, b)
        na.cancel()
        assert rng.bit_generator.state == plain_rng.bit_generator.state
    finally:
        na.close()


def test_a_failing_fill_is_raised_by_take_not_lost():
    rng = np.random.default_rng(0)

    def bad_fill(gen, block):
        raise RuntimeError("fill failed")

    na = noise.NoiseAhead(rng, lambda rows: [_fill_rows(rng, (rows, 4), bad_fill)], 1,
                          threads=1)
    try:
        with pytest.raises(RuntimeError, match="fill failed"):
            na.take(6)                    # the error happened on the pool's thread
    finally:
        na.close()


def test_updates_ahead_reads_the_environment(monkeypatch):
    monkeypatch.setenv("VGSN_NOISE_AHEAD", "3")
    assert noise.updates_ahead() == 3
    monkeypatch.setenv("VGSN_NOISE_AHEAD", "-1")
    with pytest.raises(ValueError, match="VGSN_NOISE_AHEAD"):
        noise.updates_ahead()
    monkeypatch.setenv("VGSN_NOISE_AHEAD", "auto")
    # The suite runs on the C back-end (tests/conftest.py): nothing to overlap with.
    assert noise.updates_ahead() == 0
    monkeypatch.delenv("VGSN_NOISE_AHEAD")
    assert noise.updates_ahead(default=2) == 2


class _Owner(noise.DrawsAhead):
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def _draw_noise(self, rows, cols):
        return _update_noise(self._rng, rows, cols)


def test_draws_ahead_owner_reads_rng_as_if_nothing_were_drawn_ahead(monkeypatch):
    monkeypatch.setenv("VGSN_NOISE_AHEAD", "2")
    a, b = _Owner(3), _Owner(3)
    try:
        for step in range(5):
            _same(a.take_noise(32, 9), _update_noise(b.rng, 32, 9))
            if step == 2:
                # reading .rng (what a checkpoint does) sees the in-place consumer's state
                assert a.rng.bit_generator.state == b.rng.bit_generator.state
                assert a._ahead.queued() == 0
        # a new generator (a resumed run's) replaces the old one and drops the queue
        a.rng = np.random.default_rng(8)
        b.rng = np.random.default_rng(8)
        _same(a.take_noise(32, 9), _update_noise(b.rng, 32, 9))
    finally:
        a.close_noise()


def _tiny_loop(seed=4):
    from vgsn.model.vae import OneStageModel
    from vgsn.model.vcg import VCGLoop
    from vgsn.model.nets import MaxoutGuide
    model = OneStageModel(20, 4, q_hidden=(16, 12), p_hidden=(12, 16), x_type="gaussian",
                          momentum=0.5, seed=3)
    guide = MaxoutGuide(model.x_dim, np.random.default_rng(5), units=8, pool=2)
    return VCGLoop(model, guide, steps=3, momentum=0.5, seed=seed)


def test_guided_updates_with_noise_drawn_ahead_are_bit_identical(monkeypatch):
    X = np.random.default_rng(0).random((40, 20), dtype=np.float32)
    runs = {}
    for ahead in ("0", "2"):
        monkeypatch.setenv("VGSN_NOISE_AHEAD", ahead)
        loop = _tiny_loop()
        states, outs = [], []
        try:
            for i in range(6):
                rows = 4 if i != 3 else 3          # a batch of another shape drops the queue
                outs.append(loop.train_step(X[:rows], X[10:16])["gen_cost"])
                if i == 2:                          # a checkpoint reads the generator here
                    states.append(loop.rng.bit_generator.state)
                    if ahead == "2":
                        assert loop._ahead.queued() == 0
                if i == 4:                          # another user of the generator
                    states.append(loop.draw_noise(5, 2)[0])
            assert ahead == "0" or loop._ahead.queued() == 2
            runs[ahead] = (outs, states, loop.get_state(), loop.rng.bit_generator.state)
        finally:
            loop.close_noise()
    (o0, s0, p0, r0), (o2, s2, p2, r2) = runs["0"], runs["2"]
    assert o0 == o2 and r0 == r2 and s0[0] == s2[0]
    np.testing.assert_array_equal(s0[1], s2[1])
    assert sorted(p0) == sorted(p2)
    for k in p0:
        np.testing.assert_array_equal(p0[k], p2[k], err_msg=k)
