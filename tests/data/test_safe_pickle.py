"""The restricted unpickler: numpy arrays and plain containers in, code never run."""
import gzip
import io
import os
import pickle

import numpy as np
import pytest

from vgsn.data.safe_pickle import ALLOWED_GLOBALS, RestrictedUnpickler, dumps_py2, load, load_all


def _sample(with_bytes=True):
    return {
        'images': np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        'floats': np.linspace(0, 1, 7, dtype=np.float32),
        'fortran': np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        'record': np.zeros(2, dtype=[('a', '<i4'), ('b', '<f8')]),
        'objects': np.array([1, 'a', None], dtype=object),
        'scalar': np.float64(3.5),
        'nested': [(1, 2.0, 'x'), {'k': [None, True]}, {3, 4}, frozenset([5]), 2j]
        + ([b'raw'] if with_bytes else []),  # Python 2 had no bytes: str comes back
    }


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize('protocol', [0, 2, 4, 5, 'py2'])
def test_round_trip_every_protocol(protocol):
    obj = _sample(with_bytes=protocol != 'py2')
    data = dumps_py2(obj) if protocol == 'py2' else pickle.dumps(obj, protocol=protocol)
    _assert_same(load(io.BytesIO(data)), obj)


def test_py2_pickle_looks_like_python2():
    data = dumps_py2({'a': np.zeros(3)})
    assert b'cnumpy.core.multiarray\n_reconstruct\n' in data
    assert b'_codecs' not in data and b'numpy._core' not in data
    assert pickle.loads(data, encoding='latin1')['a'].shape == (3,)


def test_load_all_reads_consecutive_pickles_from_gzip(tmp_path):
    path = tmp_path / 'net.pkl.gz'
    with gzip.open(path, 'wb') as f:
        f.write(dumps_py2({'layer': 0}))
        f.write(pickle.dumps(np.ones(4), protocol=2))
        f.write(dumps_py2([np.zeros((2, 2), np.float32)]))
    with gzip.open(path, 'rb') as f:
        objs = load_all(f)
    assert len(objs) == 3 and objs[0] == {'layer': 0}
    assert np.array_equal(objs[1], np.ones(4)) and objs[2][0].shape == (2, 2)
    with open(path.with_suffix(''), 'wb') as f:  # an uncompressed copy, plain file
        f.write(pickle.dumps(1) + pickle.dumps(2))
    with open(path.with_suffix(''), 'rb') as f:
        assert load_all(f) == [1, 2]


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize('func', [os.mkdir, eval, exec, getattr, np.load, __import__, open])
def test_malicious_pickle_is_refused(tmp_path, func):
    target = tmp_path / 'pwned'
    args = (str(target),) if func in (os.mkdir, np.load, __import__, open) else \
        ((f"__import__('os').mkdir({str(target)!r})",) if func in (eval, exec) else (object, '__subclasses__'))
    data = pickle.dumps({'x': np.zeros(2), 'y': _Evil(func, *args)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError) as info:
        load(io.BytesIO(data), name='evil.pkl')
    message = str(info.value)
    assert message.startswith('evil.pkl:') and 'refusing' in message and func.__name__ in message
    assert not target.exists()


def test_error_names_the_file_from_the_file_object(tmp_path):
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps(_Evil(os.mkdir, str(tmp_path / 'x'))))
    with open(path, 'rb') as f, pytest.raises(pickle.UnpicklingError, match=str(path)):
        load(f)


def test_placeholders_stand_in_for_named_globals():
    data = b'\x80\x02cNetLayers\nrelu_actfun\nq\x00.'  # how the 2015 pickles name it
    with pytest.raises(pickle.UnpicklingError, match='NetLayers.relu_actfun'):
        load(io.BytesIO(data))
    assert load(io.BytesIO(data), placeholders={('NetLayers', 'relu_actfun'): 'relu'}) == 'relu'


def test_truncated_and_empty_pickles_name_the_file():
    data = pickle.dumps(np.arange(100), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match='^cut.pkl: not a readable pickle'):
        load(io.BytesIO(data[:-20]), name='cut.pkl')
    with pytest.raises(pickle.UnpicklingError, match='^empty.pkl: no pickle'):
        load_all(io.BytesIO(b''), name='empty.pkl')


def test_allow_list_is_only_numpy_and_plain_builtins():
    modules = {module for module, _ in ALLOWED_GLOBALS}
    assert modules <= {'numpy', 'numpy.core.multiarray', 'numpy._core.multiarray',
                       'numpy.core.numeric', 'numpy._core.numeric', '_codecs', 'builtins',
                       'collections'}
    unpickler = RestrictedUnpickler(io.BytesIO(b''), name='f')
    assert unpickler.find_class('__builtin__', 'set') is set
    for module, name in [('builtins', 'eval'), ('os', 'system'), ('numpy', 'load'),
                         ('numpy.core.multiarray', 'frombuffer'), ('subprocess', 'Popen')]:
        with pytest.raises(pickle.UnpicklingError, match=f'{module}.{name}'):
            unpickler.find_class(module, name)
