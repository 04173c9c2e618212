"""The data layer: every file format, the splits, downloads, and every bad input.

Tests write their own small files; the real MNIST and face files in
../shared/data are used where present (skipped with a reason otherwise). No
test touches the network: downloads come from a server on 127.0.0.1.
"""
import gzip
import hashlib
import http.server
import os
import pickle
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vgsn.data.datasets import (DATASET_NAMES, MNIST_MD5, TFD_FOLDS, Dataset, DatasetError, fetch,
                           load_dataset, read_idx, read_tfd, resize_area, resolve_data_dir,
                           tfd_folds, tfd_masks)
from vgsn.data.safe_pickle import dumps_py2

from _paths import SHARED  # noqa: E402
REAL_MNIST = SHARED / 'mnist'
REAL_FACES = SHARED / 'faces'
needs_real_mnist = pytest.mark.skipif(
    not all((REAL_MNIST / (stem + '.gz')).is_file() for stem in MNIST_MD5),
    reason=f"real MNIST IDX files not found in {REAL_MNIST}")
needs_real_faces = pytest.mark.skipif(
    not (REAL_FACES / 'olivettifaces.mat').is_file() or not (REAL_FACES / 'frey_rawface.mat').is_file(),
    reason=f"olivettifaces.mat / frey_rawface.mat not found in {REAL_FACES}")

MNIST_STEMS = list(MNIST_MD5)


# --------------------------------------------------------------------------- file makers

def idx_bytes(array, magic=None):
    codes = {np.dtype('uint8'): 0x08, np.dtype('int32'): 0x0C}
    array = np.asarray(array)
    if magic is None:
        magic = codes[array.dtype] << 8 | array.ndim
    header = struct.pack('>I', magic) + struct.pack(f'>{array.ndim}I', *array.shape)
    return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


def write(path, data, gz):
    path = Path(str(path) + '.gz') if gz else Path(path)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist(folder, n_train=30, n_test=8, gz=True, seed=0):
    """Small IDX files with the MNIST names; returns the uint8 arrays."""
    rng = np.random.RandomState(seed)
    arrays = {
        'train-images-idx3-ubyte': rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
        'train-labels-idx1-ubyte': rng.randint(0, 10, n_train).astype(np.uint8),
        't10k-images-idx3-ubyte': rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
        't10k-labels-idx1-ubyte': rng.randint(0, 10, n_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write(folder / stem, idx_bytes(array), gz)
    arrays['images'] = arrays['train-images-idx3-ubyte']
    return arrays


def make_mnist_pkl(path, arrays, valid_size):
    """mnist.pkl.gz in the 2015 layout: Python 2 pickle, pixels k/256."""
    x = arrays['train-images-idx3-ubyte'].reshape(-1, 784).astype(np.float32) / 256
    y = arrays['train-labels-idx1-ubyte'].astype(np.int64)
    xt = arrays['t10k-images-idx3-ubyte'].reshape(-1, 784).astype(np.float32) / 256
    yt = arrays['t10k-labels-idx1-ubyte'].astype(np.int64)
    cut = len(x) - valid_size
    obj = ((x[:cut], y[:cut]), (x[cut:], y[cut:]), (xt, yt))
    path.write_bytes(gzip.compress(dumps_py2(obj)))
    return obj


def tfd_layout(n_unlabeled=10, n_labeled=12, n_folds=5, size=48, seed=1):
    """A TFD-like dict: the first 2 unlabeled images blank, labelled images rotating
    through train / valid / test across folds."""
    rng = np.random.RandomState(seed)
    n = n_unlabeled + n_labeled
    images = rng.randint(1, 256, (n, size, size)).astype(np.uint8)
    images[:2] = 0
    folds = np.zeros((n, n_folds), np.int32)
    for j in range(n_labeled):
        for k in range(n_folds):
            folds[n_unlabeled + j, k] = 1 + (j + k) % 3
    labs_ex = np.full((n, 1), -1, np.int32)
    labs_ex[n_unlabeled:, 0] = rng.randint(1, 8, n_labeled)
    labs_id = np.arange(n, dtype=np.int32).reshape(n, 1)
    return {'images': images, 'folds': folds, 'labs_ex': labs_ex, 'labs_id': labs_id}


def olivetti_faces(seed=2):
    """(images (400, 64, 64), faces (4096, 400)) with faces[:, i].reshape(64, 64).T == images[i]."""
    images = np.random.RandomState(seed).randint(0, 256, (400, 64, 64)).astype(np.uint8)
    faces = np.stack([img.T.ravel() for img in images], axis=1)
    return images, faces


def assert_untouched(path, before):
    assert path.read_bytes() == before, f"{path} was changed"


# --------------------------------------------------------------------------- Dataset, folders, names

def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv('VGSN_DATA', raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir() == tmp_path / 'data'
    monkeypatch.setenv('VGSN_DATA', str(tmp_path / 'env'))
    assert resolve_data_dir() == tmp_path / 'env'
    assert resolve_data_dir(tmp_path / 'arg') == tmp_path / 'arg'
    assert not (tmp_path / 'data').exists()  # reading never creates the folder


def test_unknown_dataset_name_and_option():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'.*mnist, tfd, olivetti, frey, digits"):
        load_dataset('cifar')
    with pytest.raises(DatasetError, match="'digits' has no option size"):
        load_dataset('digits', size=48)
    assert DATASET_NAMES == ('mnist', 'tfd', 'olivetti', 'frey', 'digits')


def test_digits_demo_is_bundled_and_split_fixed():
    ds = load_dataset('DIGITS', data_dir='/nonexistent')
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1297, 250, 250)
    assert ds.image_shape == (8, 8) and ds.n_pixels == 64 and 'demo' in ds.source
    for x in (ds.train, ds.valid, ds.test):
        assert x.dtype == np.float32 and x.shape[1] == 64 and x.min() >= 0 and x.max() <= 1
    assert ds.train.max() == 1.0
    assert np.all(np.isin(np.round(ds.train * 16), np.arange(17)))
    again = load_dataset('digits')
    assert np.array_equal(ds.test, again.test) and np.array_equal(ds.test_labels, again.test_labels)
    labels = np.concatenate([ds.train_labels, ds.valid_labels, ds.test_labels])
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert 'digits' in repr(ds) and 'train=1297' in repr(ds)


def test_dataset_checks_its_arrays():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(DatasetError, match='float32'):
        Dataset('d', x.astype(np.float64), x, x, (2, 2))
    with pytest.raises(DatasetError, match='labels'):
        Dataset('d', x, x, x, (2, 2), train_labels=np.zeros(2))


# --------------------------------------------------------------------------- MNIST

@pytest.mark.parametrize('gz', [True, False])
def test_mnist_idx_split_and_scaling(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    ds = load_dataset('mnist', tmp_path, verify=False, valid_size=6, download=False)
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((24, 784), (6, 784), (8, 784))
    assert ds.image_shape == (28, 28) and ds.train.dtype == np.float32
    flat = arrays['images'].reshape(30, 784)
    assert np.array_equal(ds.train, flat[:24].astype(np.float32) / 256)
    assert np.array_equal(ds.valid, flat[24:].astype(np.float32) / 256)
    assert np.array_equal(ds.test_labels, arrays['t10k-labels-idx1-ubyte'])
    usual = load_dataset('mnist', tmp_path, verify=False, valid_size=6, divide_by=255)
    assert usual.train.max() == np.float32(flat[:24].max() / 255)


def test_mnist_pickle_and_idx_give_the_same_split(tmp_path):
    arrays = make_mnist(tmp_path / 'idx')
    (tmp_path / 'pkl').mkdir()
    make_mnist_pkl(tmp_path / 'pkl' / 'mnist.pkl.gz', arrays, valid_size=6)
    from_idx = load_dataset('mnist', tmp_path / 'idx', verify=False, valid_size=6)
    from_pkl = load_dataset('mnist', tmp_path / 'pkl')
    assert 'pickle' in from_pkl.source
    for part in ('train', 'valid', 'test', 'train_labels', 'valid_labels', 'test_labels'):
        assert np.array_equal(getattr(from_idx, part), getattr(from_pkl, part)), part
    # both present: the (checksummable) IDX files win unless asked otherwise
    shutil.copy(tmp_path / 'pkl' / 'mnist.pkl.gz', tmp_path / 'idx')
    assert 'IDX' in load_dataset('mnist', tmp_path / 'idx', verify=False, valid_size=6).source
    assert 'pickle' in load_dataset('mnist', tmp_path / 'idx', source='pkl').source


@needs_real_mnist
def test_real_mnist_split_shapes_range_and_checksums():
    for stem, md5 in MNIST_MD5.items():
        content = gzip.decompress((REAL_MNIST / (stem + '.gz')).read_bytes())
        assert hashlib.md5(content).hexdigest() == md5, stem
    ds = load_dataset('mnist', data_dir=REAL_MNIST, download=False)  # verify=True by default
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((50000, 784), (10000, 784), (10000, 784))
    for x in (ds.train, ds.valid, ds.test):
        assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == np.float32(255 / 256)
    assert ds.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(ds.test_labels).sum() == 10000 and ds.test_labels.max() == 9
    # the first non-zero pixels of image 0 as the Theano tutorial's mnist.pkl.gz stores them
    first = ds.train[0][ds.train[0] > 0][:4]
    assert np.array_equal(first, np.array([3, 18, 18, 18], np.float32) / 256)
    labels = read_idx(REAL_MNIST / 'train-labels-idx1-ubyte.gz', md5=MNIST_MD5['train-labels-idx1-ubyte'])
    assert np.array_equal(labels[50000:], ds.valid_labels)


# --------------------------------------------------------------------------- MNIST bad input

def _mnist_error(tmp_path, **options):
    options.setdefault('verify', False)
    options.setdefault('valid_size', 6)
    with pytest.raises(DatasetError) as info:
        load_dataset('mnist', tmp_path, download=False, **options)
    return str(info.value)


def test_bad_missing_mnist_without_download(tmp_path):
    message = _mnist_error(tmp_path / 'empty')
    assert str(tmp_path / 'empty') in message and 'data/README.md' in message
    assert 'VGSN_DATA' in message and not (tmp_path / 'empty').exists()
    with pytest.raises(DatasetError, match='mnist.pkl.gz: file not found'):
        load_dataset('mnist', tmp_path, source='pkl')
    with pytest.raises(DatasetError, match="unknown source 'csv'"):
        load_dataset('mnist', tmp_path, source='csv')


# --------------------------------------------------------------------------- absent or broken

def _error_of(call):
    with pytest.raises(DatasetError) as info:
        call()
    return info.value


def _truncate(path, keep=-30):
    path.write_bytes(path.read_bytes()[:keep])


def _only(folder, stem):
    (folder / (stem + '.gz')).unlink()


@pytest.mark.parametrize('damage, missing', [
    (None, True),                                             # no folder at all
    (lambda f: _only(f, 't10k-labels-idx1-ubyte'), True),     # one of the four files absent
    (lambda f: _truncate(f / 'train-images-idx3-ubyte.gz'), False),
    (lambda f: (f / 't10k-labels-idx1-ubyte.gz').write_bytes(b''), False),
    (lambda f: write(f / 't10k-images-idx3-ubyte', idx_bytes(np.zeros((8, 28, 27), np.uint8)), True),
     False),
    (lambda f: write(f / 'train-labels-idx1-ubyte', idx_bytes(np.zeros(29, np.uint8)), True), False),
])
def test_missing_is_true_only_when_the_data_are_absent(tmp_path, damage, missing):
    folder = tmp_path / 'data'
    if damage is not None:
        make_mnist(folder)
        damage(folder)
    err = _error_of(lambda: load_dataset('mnist', folder, download=False, verify=False,
                                         valid_size=6))
    assert err.missing is missing, str(err)
    assert isinstance(err.missing, bool)


def test_missing_for_single_files_and_names(tmp_path):
    make_mnist(tmp_path)
    assert _error_of(lambda: read_idx(tmp_path / 'nothing.gz')).missing is True
    assert _error_of(lambda: load_dataset('mnist', tmp_path, source='pkl')).missing is True
    assert _error_of(lambda: load_dataset('olivetti', tmp_path,
                                          path=tmp_path / 'none.mat')).missing is True
    assert _error_of(lambda: read_idx(tmp_path / 'train-images-idx3-ubyte.gz',
                                      md5='0' * 32)).missing is False
    (tmp_path / 'olivettifaces.mat').write_bytes(b'MATLAB 5.0 garbage')
    assert _error_of(lambda: load_dataset('olivetti', tmp_path)).missing is False
    # A bad name or option is the caller's mistake, not absent data: no fallback.
    assert _error_of(lambda: load_dataset('cifar', tmp_path)).missing is False
    assert _error_of(lambda: load_dataset('mnist', tmp_path, source='csv')).missing is False
    assert _error_of(lambda: load_dataset('digits', tmp_path, fold=1)).missing is False
    # The attribute survives pickling (a sweep worker's error crosses processes).
    again = pickle.loads(pickle.dumps(DatasetError('x: file not found. Fix: y', missing=True)))
    assert again.missing is True and str(again) == 'x: file not found. Fix: y'
    assert DatasetError('plain').missing is False


def _quick_config():
    from vgsn.run import presets
    return presets.get_preset('quick')


def test_the_demo_falls_back_to_the_digits_only_when_mnist_is_absent(tmp_path):
    from vgsn.run.data import load_data
    config = _quick_config()
    assert (config.dataset, config.fallback_dataset) == ('mnist', 'digits')
    absent = tmp_path / 'absent'
    data, note = load_data(config, absent)
    assert data.name == "digits" and note == f"mnist not found in {absent}, so the stand-in digits"
    assert not absent.exists()              # the demo never downloads, so never makes it
    # The same folder with a partial MNIST (a file absent): still absent, still the digits.
    make_mnist(absent)
    _only(absent, 'train-labels-idx1-ubyte')
    assert load_data(config, absent)[0].name == 'digits'


def test_a_truncated_mnist_is_said_not_replaced(tmp_path, capsys):
    from vgsn.run import cli
    from vgsn.run.data import load_data
    from vgsn.run.folder import TrainingError
    folder = tmp_path / 'data'
    make_mnist(folder)
    path = folder / 'train-images-idx3-ubyte.gz'    # read first: cut before its md5 is checked
    _truncate(path)
    with pytest.raises(TrainingError) as info:
        load_data(_quick_config(), folder)
    message = str(info.value)
    assert message.startswith(f'{path}: truncated or corrupt gzip') and '\n' not in message
    assert 'Fix: ' in message
    # Through the run script: one line naming the file, the status of a broken data file
    # (docs/reliability.md "What each failure prints": 2), nothing written.
    out = tmp_path / 'run'
    assert cli.cli_main(['--quick', '--data-dir', str(folder), '--out', str(out), '--quiet'],
                        'mnist') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('run_mnist.py: error: ') and str(path) in err[0]
    assert not out.exists()


def test_bad_empty_file(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / 'train-images-idx3-ubyte.gz'
    path.write_bytes(b'')
    message = _mnist_error(tmp_path)
    assert message.startswith(f'{path}: file is empty') and 'delete it' in message
    assert path.exists()


def test_bad_truncated_gzip(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / 't10k-images-idx3-ubyte.gz'
    path.write_bytes(path.read_bytes()[:-30])
    before = path.read_bytes()
    assert _mnist_error(tmp_path).startswith(f'{path}: truncated or corrupt gzip')
    assert_untouched(path, before)


def test_bad_truncated_raw_idx(tmp_path):
    make_mnist(tmp_path, gz=False)
    path = tmp_path / 'train-images-idx3-ubyte'
    path.write_bytes(path.read_bytes()[:-1])
    assert 'promises' in _mnist_error(tmp_path)


def test_bad_idx_magic(tmp_path):
    arrays = make_mnist(tmp_path)
    path = write(tmp_path / 'train-images-idx3-ubyte', idx_bytes(arrays['images'], magic=0x00000801), True)
    before = path.read_bytes()
    assert _mnist_error(tmp_path).startswith(f'{path}: wrong IDX magic number 0x00000801, expected 0x00000803')
    assert_untouched(path, before)
    with pytest.raises(DatasetError, match='not an IDX file'):
        read_idx(write(tmp_path / 'junk', b'PK\x03\x04 not idx', False))


def test_bad_count_mismatch(tmp_path):
    make_mnist(tmp_path)
    path = write(tmp_path / 'train-labels-idx1-ubyte', idx_bytes(np.zeros(29, np.uint8)), True)
    message = _mnist_error(tmp_path)
    assert message.startswith(f'{path}: 29 labels for the 30 images') and 'same MNIST release' in message


def test_bad_image_shape(tmp_path):
    make_mnist(tmp_path)
    path = write(tmp_path / 't10k-images-idx3-ubyte', idx_bytes(np.zeros((8, 28, 27), np.uint8)), True)
    assert _mnist_error(tmp_path).startswith(f'{path}: images are (28, 27), expected 28x28')


def test_bad_md5(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / 'train-images-idx3-ubyte.gz'
    before = path.read_bytes()
    message = _mnist_error(tmp_path, verify=True)
    assert message.startswith(f'{path}: md5 of the decompressed content is ')
    assert MNIST_MD5['train-images-idx3-ubyte'] in message and 'verify=False' in message
    assert_untouched(path, before)
    with pytest.raises(DatasetError, match='md5'):
        read_idx(path, md5='0' * 32)


def test_bad_valid_size(tmp_path):
    make_mnist(tmp_path)
    assert 'valid_size=30 does not fit 30' in _mnist_error(tmp_path, valid_size=30)


def test_bad_mnist_pickles(tmp_path):
    arrays = make_mnist(tmp_path / 'src')
    path = tmp_path / 'mnist.pkl.gz'
    obj = make_mnist_pkl(path, arrays, valid_size=6)
    (xtr, ytr), valid, test = obj
    cases = {
        'pixel values outside \\[0, 1\\] after scaling': ((xtr + 1.5, ytr), valid, test),
        'train images have shape \\(24, 783\\)': ((xtr[:, :783], ytr), valid, test),
        'train has 24 images but labels of shape \\(23,\\)': ((xtr, ytr[:23]), valid, test),
        'expected \\(\\(X, y\\), \\(X, y\\), \\(X, y\\)\\)': {'train': xtr},
    }
    for pattern, bad in cases.items():
        path.write_bytes(gzip.compress(dumps_py2(bad)))
        with pytest.raises(DatasetError, match=f'^{path}: {pattern}'):
            load_dataset('mnist', tmp_path)


def test_malicious_mnist_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.mkdir, (str(tmp_path / 'pwned'),)

    path = tmp_path / 'mnist.pkl.gz'
    path.write_bytes(gzip.compress(pickle.dumps(((Evil(), 1), (2, 3), (4, 5)), protocol=2)))
    with pytest.raises(DatasetError, match=f"^{path}: refusing to load global '(posix|os).mkdir'"):
        load_dataset('mnist', tmp_path)
    assert not (tmp_path / 'pwned').exists()


# --------------------------------------------------------------------------- downloads

class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}

    def do_GET(self):
        mode, _, name = self.path.strip('/').partition('/')
        body = self.files.get(name)
        if mode not in ('good', 'corrupt', 'badgz', 'cut') or body is None:
            self.send_error(500 if mode == 'error' else 404)
            return
        if mode == 'corrupt':
            body = gzip.compress(b'not the file you wanted')
        elif mode == 'badgz':
            body = body[:-10]
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if mode == 'cut':  # promise everything, send half, hang up
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """Serve _Handler.files on 127.0.0.1: /good/, /corrupt/, /badgz/, /cut/, /error/."""
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    _Handler.files = {}
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def _served(server, name, data):
    _Handler.files[name] = data
    return hashlib.md5(gzip.decompress(data)).hexdigest()


def test_download_tries_mirrors_in_turn(tmp_path, server):
    good = gzip.compress(b'hello idx' * 1000)
    md5 = _served(server, 'f.gz', good)
    mirrors = [f'{server}/error/', f'{server}/corrupt', f'{server}/cut/', f'{server}/badgz/', f'{server}/good/']
    path = fetch('f.gz', tmp_path / 'new', mirrors, md5=md5, progress=False)
    assert path == tmp_path / 'new' / 'f.gz' and path.read_bytes() == good
    assert sorted(os.listdir(tmp_path / 'new')) == ['f.gz']


@pytest.mark.parametrize('mode, reason', [('corrupt', 'md5 of the content'),
                                          ('badgz', 'corrupt gzip'),
                                          ('cut', 'interrupted|IncompleteRead'),
                                          ('error', '500'),
                                          ('missing', '404')])
def test_download_failure_leaves_nothing(tmp_path, server, mode, reason):
    md5 = _served(server, 'f.gz', gzip.compress(b'payload' * 5000))
    folder = tmp_path / 'data'
    folder.mkdir()
    with pytest.raises(DatasetError, match=reason) as info:
        fetch('f.gz', folder, [f'{server}/{mode}/'], md5=md5, progress=False)
    assert str(folder / 'f.gz') in str(info.value) and 'VGSN_DATA' in str(info.value)
    assert os.listdir(folder) == []  # no file, no .part
    assert info.value.missing is True  # nothing on disk: absent, whatever the mirror sent
    with pytest.raises(DatasetError):
        fetch('f.gz', tmp_path / 'never', [f'{server}/{mode}/'], md5=md5, progress=False)
    assert not (tmp_path / 'never').exists()


def test_download_never_overwrites(tmp_path, server):
    md5 = _served(server, 'f.gz', gzip.compress(b'new'))
    path = tmp_path / 'f.gz'
    path.write_bytes(b'precious')
    with pytest.raises(DatasetError, match='never overwritten') as info:
        fetch('f.gz', tmp_path, [f'{server}/good/'], md5=md5)
    assert info.value.missing is False
    assert_untouched(path, b'precious')


def test_mnist_downloads_only_what_is_missing(tmp_path, server, monkeypatch):
    arrays = make_mnist(tmp_path / 'src')
    for stem in MNIST_STEMS:
        monkeypatch.setitem(MNIST_MD5, stem, _served(server, stem + '.gz', (tmp_path / 'src' / (stem + '.gz')).read_bytes()))
    folder = tmp_path / 'data'
    folder.mkdir()
    kept = folder / 'train-images-idx3-ubyte.gz'
    shutil.copy(tmp_path / 'src' / kept.name, kept)
    os.utime(kept, (1, 1))
    ds = load_dataset('mnist', folder, mirrors=[f'{server}/error/', f'{server}/good/'], valid_size=6,
                      progress=False)
    assert np.array_equal(ds.test_labels, arrays['t10k-labels-idx1-ubyte'])
    assert kept.stat().st_mtime == 1  # the file already there was not fetched again
    assert sorted(os.listdir(folder)) == sorted(stem + '.gz' for stem in MNIST_STEMS)


def test_mnist_download_failure_message(tmp_path, server):
    with pytest.raises(DatasetError) as info:
        load_dataset('mnist', tmp_path / 'data', mirrors=[f'{server}/error/'], progress=False)
    message = str(info.value)
    assert 'train-images-idx3-ubyte.gz' in message and '500' in message and 'data/README.md' in message
    assert not (tmp_path / 'data').exists()


@needs_real_mnist
def test_real_mnist_through_a_local_mirror(tmp_path, server):
    for stem in MNIST_STEMS:
        _served(server, stem + '.gz', (REAL_MNIST / (stem + '.gz')).read_bytes())
    ds = load_dataset('mnist', tmp_path / 'fresh', mirrors=[f'{server}/corrupt/', f'{server}/good/'],
                      progress=False)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50000, 10000, 10000)
    assert sorted(os.listdir(tmp_path / 'fresh')) == sorted(stem + '.gz' for stem in MNIST_STEMS)


# --------------------------------------------------------------------------- TFD

def _write_tfd(path, raw, fmt):
    if fmt == 'mat':
        scipy.io.savemat(path, raw)
    elif fmt == 'pkl':
        path.write_bytes(dumps_py2(raw))
    elif fmt == 'pkl.gz':
        path.write_bytes(gzip.compress(dumps_py2(raw)))
    elif fmt == 'mat73':  # MATLAB v7.3: HDF5 behind a 512-byte MATLAB header, arrays transposed
        import h5py
        with h5py.File(path, 'w', userblock_size=512) as f:
            for key, value in raw.items():
                f[key] = np.ascontiguousarray(value.T)
        with open(path, 'r+b') as f:
            f.write(b'MATLAB 7.3 MAT-file'.ljust(116) + b'\0' * 8 + b'\x00\x02IM')
    return path


@pytest.mark.parametrize('fmt, name', [('mat', 'TFD_48x48.mat'), ('pkl', 'tfd_data_48x48.pkl'),
                                       ('pkl.gz', 'tfd_data_48x48.pkl.gz'), ('mat73', 'TFD_48x48.mat')])
def test_tfd_formats_all_folds(tmp_path, fmt, name):
    raw = tfd_layout()
    _write_tfd(tmp_path / name, raw, fmt)
    ds = load_dataset('tfd', tmp_path)
    # fold 'all': 8 non-blank unlabeled + every labelled image (each is train in some fold)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (20, 12, 12)
    assert ds.image_shape == (48, 48) and ds.train.shape[1] == 2304
    x = raw['images'].reshape(22, 2304).astype(np.float32) / 255
    assert np.array_equal(ds.train, x[2:])  # blank images 0 and 1 dropped, file order kept
    assert np.array_equal(ds.valid, x[10:])
    assert ds.train_labels[:8].tolist() == [-1] * 8
    assert np.array_equal(ds.test_labels, raw['labs_ex'][10:, 0] - 1)
    assert read_tfd(tmp_path / name)['labs_id'].shape == (22,)


@pytest.mark.parametrize('fold', [0, 1, 4, '3'])
def test_tfd_single_fold_is_disjoint(tmp_path, fold):
    raw = tfd_layout()
    _write_tfd(tmp_path / 'TFD_48x48.mat', raw, 'mat')
    ds = load_dataset('tfd', tmp_path, fold=fold)
    k = int(fold)
    code = raw['folds'][:, k]
    expect = {part: [i for i in range(22) if i >= 2 and code[i] in codes]
              for part, codes in (('train', (0, 1)), ('valid', (2,)), ('test', (3,)))}
    x = raw['images'].reshape(22, 2304).astype(np.float32) / 255
    for part, rows in expect.items():
        assert np.array_equal(getattr(ds, part), x[rows]), part
    assert len(expect['train']) + len(expect['valid']) + len(expect['test']) == 20
    labelled_only = load_dataset('tfd', tmp_path, fold=fold, unlabeled=False)
    assert len(labelled_only.train) == len(expect['train']) - 8 and (labelled_only.train_labels >= 0).all()


def test_tfd_fold_all_flags_its_overlap(tmp_path):
    raw = tfd_layout()
    _write_tfd(tmp_path / 'TFD_48x48.mat', raw, 'mat')
    ds = load_dataset('tfd', tmp_path)
    # Independently: a labelled row is "test" when any fold says 3 and "train" when any says 1.
    codes = raw['folds']
    in_train = (codes == 1).any(1) | (codes == 0).all(1)
    in_test = (codes == 3).any(1)
    both = [i for i in range(2, 22) if in_train[i] and in_test[i]]
    assert len(both) > 0
    assert ds.test_overlaps_train is True
    x = raw['images'].reshape(22, 2304).astype(np.float32) / 255
    for i in both:  # the very same image sits in train and in test
        assert (ds.train == x[i]).all(1).any() and (ds.test == x[i]).all(1).any()
    assert f"{len(both)} of {len(ds.test)} test" in ds.note and 'fold=0..4' in ds.note


def test_tfd_per_fold_protocol_is_held_out(tmp_path):
    raw = tfd_layout()
    _write_tfd(tmp_path / 'TFD_48x48.mat', raw, 'mat')
    assert tfd_folds(tmp_path) == list(TFD_FOLDS) == [0, 1, 2, 3, 4]
    sizes = []
    for k in tfd_folds(tmp_path):
        ds = load_dataset('tfd', tmp_path, fold=k)
        assert ds.test_overlaps_train is False and ds.note == ''
        train_rows = {r.tobytes() for r in ds.train}
        assert not any(r.tobytes() in train_rows for r in np.vstack([ds.valid, ds.test]))
        sizes.append(len(ds.test))
    # Across the 5 folds every labelled image is a test image at least once.
    assert sum(sizes) >= 12
    three = tfd_layout(n_folds=3)
    _write_tfd(tmp_path / 'three.mat', three, 'mat')
    assert tfd_folds(path=tmp_path / 'three.mat') == [0, 1, 2]
    with pytest.raises(DatasetError, match='cannot be downloaded'):
        tfd_folds(tmp_path / 'nowhere')


def test_other_datasets_do_not_overlap():
    ds = load_dataset('digits')
    assert ds.test_overlaps_train is False and ds.note == ''


def test_tfd_masks():
    folds = np.array([[0, 0], [1, 2], [3, 1]])
    masks = tfd_masks(folds, 'all')
    assert masks['train'].tolist() == [False, True, True] and masks['valid'].tolist() == [False, True, False]
    assert tfd_masks(folds, 1)['test'].tolist() == [False, False, False]
    for bad in (2, -1, 'first', True):
        with pytest.raises(DatasetError, match='not a fold'):
            tfd_masks(folds, bad)


def test_tfd_missing_says_where_and_which_stand_in(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset('tfd', tmp_path)
    message = str(info.value)
    assert str(tmp_path / 'TFD_48x48.mat') in message and 'cannot be downloaded' in message
    assert "'olivetti'" in message and 'path=' in message


@pytest.mark.parametrize('fmt', ['mat', 'pkl'])
def test_bad_tfd_files(tmp_path, fmt):
    path = tmp_path / ('TFD_48x48.mat' if fmt == 'mat' else 'tfd_data_48x48.pkl')
    good = tfd_layout()
    cases = {
        "no 'folds' in the file": {k: v for k, v in good.items() if k != 'folds'},
        "'images' has shape \\(22, 47, 48\\)": {**good, 'images': good['images'][:, :47]},
        "'folds' must be": {**good, 'folds': good['folds'] + 4},
        "'labs_ex' has 21 entries for 22 images": {**good, 'labs_ex': good['labs_ex'][:21]},
        'pixel values outside \\[0, 1\\] after scaling \\(min 0.17.*, max 1.17': {
            **good, 'images': good['images'].astype(np.int16) + 44},
    }
    for pattern, raw in cases.items():
        _write_tfd(path, raw, fmt)
        before = path.read_bytes()
        with pytest.raises(DatasetError, match=f'^{path}: {pattern}') as info:
            load_dataset('tfd', tmp_path)
        assert 'Fix:' in str(info.value)
        assert_untouched(path, before)


def test_bad_tfd_pickle_contents(tmp_path):
    path = tmp_path / 'tfd.pkl'
    path.write_bytes(dumps_py2([1, 2]))
    with pytest.raises(DatasetError, match='holds a list, expected a dict'):
        load_dataset('tfd', path=path)
    path.write_bytes(b'\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.')
    with pytest.raises(DatasetError, match="refusing to load global 'os.system'"):
        load_dataset('tfd', path=path)
    path.write_bytes(b'MATLAB 5.0 MAT-file garbage')
    with pytest.raises(DatasetError, match='not a readable .mat file'):
        read_tfd(path)


# --------------------------------------------------------------------------- faces

def test_olivetti_layout_orientation_and_split(tmp_path):
    images, faces = olivetti_faces()
    scipy.io.savemat(tmp_path / 'olivettifaces.mat', {'faces': faces})
    full = load_dataset('olivetti', tmp_path, size=None)
    assert full.image_shape == (64, 64)
    assert np.array_equal(full.train[0].reshape(64, 64), images[0].astype(np.float32) / 255)
    assert np.array_equal(full.test[-1].reshape(64, 64), images[399].astype(np.float32) / 255)
    assert (len(full.train), len(full.valid), len(full.test)) == (300, 50, 50)
    assert set(full.train_labels) == set(range(30)) and set(full.valid_labels) == set(range(30, 35))
    assert set(full.test_labels) == set(range(35, 40))
    small = load_dataset('olivetti', path=tmp_path / 'olivettifaces.mat')
    assert small.image_shape == (48, 48) and small.train.shape == (300, 2304)
    assert 0 <= small.train.min() and small.train.max() <= 1
    expect = resize_area(images[:1].astype(np.float32) / 255, (48, 48))
    assert np.allclose(small.train[0], expect.ravel())


def test_frey_layout_and_split(tmp_path):
    frames = np.random.RandomState(3).randint(0, 256, (1965, 28, 20)).astype(np.uint8)
    scipy.io.savemat(tmp_path / 'frey_rawface.mat', {'ff': frames.reshape(1965, 560).T})
    ds = load_dataset('frey', tmp_path)
    assert ds.image_shape == (28, 20)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1565, 200, 200)
    assert np.array_equal(ds.train[0].reshape(28, 20), frames[0] / np.float32(255))
    assert np.array_equal(ds.valid[0].reshape(28, 20), frames[1565] / np.float32(255))
    assert np.array_equal(ds.test[-1].reshape(28, 20), frames[-1] / np.float32(255))
    assert ds.train_labels is None


def test_bad_face_files(tmp_path):
    with pytest.raises(DatasetError, match='olivettifaces.mat: file not found.*roweis'):
        load_dataset('olivetti', tmp_path)
    with pytest.raises(DatasetError, match='frey_rawface.mat: file not found.*roweis'):
        load_dataset('frey', tmp_path)
    path = tmp_path / 'olivettifaces.mat'
    scipy.io.savemat(path, {'images': np.zeros((4096, 400), np.uint8)})
    with pytest.raises(DatasetError, match=f"^{path}: no 'faces' in the file \\(it has \\['images'\\]\\)"):
        load_dataset('olivetti', tmp_path)
    scipy.io.savemat(path, {'faces': np.zeros((4096, 399), np.uint8)})
    with pytest.raises(DatasetError, match="'faces' has shape \\(4096, 399\\)"):
        load_dataset('olivetti', tmp_path)
    scipy.io.savemat(path, {'faces': np.full((4096, 400), -3.0)})
    with pytest.raises(DatasetError, match='outside \\[0, 1\\]'):
        load_dataset('olivetti', tmp_path)
    frey = tmp_path / 'frey_rawface.mat'
    scipy.io.savemat(frey, {'ff': np.zeros((560, 300), np.uint8)})
    with pytest.raises(DatasetError, match="'ff' has shape \\(560, 300\\)"):
        load_dataset('frey', tmp_path)
    frey.write_bytes(b'')
    with pytest.raises(DatasetError, match='file is empty'):
        load_dataset('frey', tmp_path)


def test_resize_area():
    blocks = np.random.RandomState(4).rand(2, 6, 9).astype(np.float32)
    down = resize_area(blocks, (2, 3))
    assert np.allclose(down, blocks.reshape(2, 2, 3, 3, 3).mean(axis=(2, 4)), atol=1e-6)
    odd = resize_area(blocks, (4, 5))
    assert np.allclose(odd.mean(axis=(1, 2)), blocks.mean(axis=(1, 2)), atol=1e-6)
    flat = resize_area(np.full((1, 64, 64), 0.7, np.float32), (48, 48))
    assert np.allclose(flat, 0.7) and flat.max() <= 0.7


@needs_real_faces
def test_real_face_stand_ins():
    olivetti = load_dataset('olivetti', REAL_FACES)
    assert olivetti.train.shape == (300, 2304) and olivetti.image_shape == (48, 48)
    frey = load_dataset('frey', REAL_FACES)
    assert (frey.train.shape, frey.test.shape) == ((1565, 560), (200, 560))
    for ds in (olivetti, frey):
        for x in (ds.train, ds.valid, ds.test):
            assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 and x.std() > 0.05
