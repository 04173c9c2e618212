"""Read pickles without running code from them.

A pickle names the globals (functions and classes) it needs, and the standard
unpickler imports and calls whatever it is told to, so loading a pickle from
the internet is the same as running a program from it. The files vgsn reads
(the Theano tutorial's ``mnist.pkl.gz``, the 2015 code's TFD dict and network
pickles) only ever need numpy arrays and plain containers, so
:class:`RestrictedUnpickler` admits exactly those globals and refuses every
other one with an :class:`pickle.UnpicklingError` that names the file and the
global.

Python 2 pickles (all of the 2015 files) need ``encoding='latin1'``, the
default here: numpy stores array bytes in Python 2 ``str`` objects, and latin-1
maps them back to the same bytes.

Globals that a trusted file refers to but that vgsn does not want to import
(the 2015 network pickles name ``NetLayers.relu_actfun``, for instance) can be
mapped to harmless stand-in objects with ``placeholders``::

    with open(path, 'rb') as f:
        objects = load_all(f, placeholders={('NetLayers', 'relu_actfun'): 'relu'})
"""
import builtins
import codecs
import collections
import io
import pickle
import struct

import numpy as np

__all__ = ['RestrictedUnpickler', 'load', 'load_all', 'dumps_py2', 'ALLOWED_GLOBALS']

UnpicklingError = pickle.UnpicklingError


def _numpy_globals():
    """The numpy callables that array and scalar pickles reconstruct through.

    They are taken from numpy's own ``__reduce__`` results rather than imported
    by name, so the same objects serve pickles written by numpy 1.x (module
    ``numpy.core``) and numpy 2.x (``numpy._core``) without touching numpy's
    deprecated ``numpy.core`` alias.
    """
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.empty(1).__reduce_ex__(5)[0]  # protocol-5 array pickles
    found = {}
    for core in ('numpy.core', 'numpy._core'):
        found[(core + '.multiarray', '_reconstruct')] = reconstruct
        found[(core + '.multiarray', 'scalar')] = scalar
        found[(core + '.numeric', '_frombuffer')] = frombuffer
    found[('numpy', 'ndarray')] = np.ndarray
    found[('numpy', 'dtype')] = np.dtype
    return found


#: (module, name) -> object for every global a pickle may name. Besides numpy's
#: array machinery: ``_codecs.encode`` (how Python 3 writes ``bytes`` at
#: protocol <= 2) and plain, side-effect-free containers and constructors.
ALLOWED_GLOBALS = {
    **_numpy_globals(),
    ('_codecs', 'encode'): codecs.encode,
    **{('builtins', name): getattr(builtins, name)
       for name in ('set', 'frozenset', 'complex', 'slice', 'bytearray', 'range',
                    'list', 'dict', 'tuple', 'int', 'float', 'str', 'bytes', 'bool')},
    ('collections', 'OrderedDict'): collections.OrderedDict,
}

# Python 2 spelled some modules differently; these are the ones whose allowed
# names appear in old pickles.
_PY2_MODULES = {'__builtin__': 'builtins'}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals.

    Parameters
    ----------
    file : binary file object
        Open for reading, positioned at the start of a pickle.
    name : str, optional
        How to name the file in error messages; defaults to ``file.name``.
    placeholders : dict, optional
        ``{(module, name): object}``: extra globals to admit, each replaced by
        the given object (a string or a small stub) instead of importing it.
    encoding : str
        How to decode Python 2 ``str`` objects; ``'latin1'`` keeps numpy's
        array bytes intact.

    Raises
    ------
    pickle.UnpicklingError
        From :meth:`load`, when the pickle names any other global or is
        truncated or corrupt; the message names the file and the global.
    """

    def __init__(self, file, *, name=None, placeholders=None, encoding='latin1'):
        super().__init__(file, encoding=encoding)
        self.name = name if name is not None else str(getattr(file, 'name', '<pickle>'))
        self.placeholders = dict(placeholders or {})

    def find_class(self, module, name):
        module = _PY2_MODULES.get(module, module)
        key = (module, name)
        if key in self.placeholders:
            return self.placeholders[key]
        if key in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[key]
        raise UnpicklingError(
            f"{self.name}: refusing to load global '{module}.{name}': only numpy arrays and "
            f"plain containers are allowed (the file is malicious, or holds objects vgsn "
            f"does not read)")

    def persistent_load(self, pid):
        raise UnpicklingError(f"{self.name}: refusing persistent id {pid!r}: "
                              f"only numpy arrays and plain containers are allowed")


def _at_eof(fileobj):
    """True when nothing is left to read, without consuming anything."""
    if hasattr(fileobj, 'peek'):
        return not fileobj.peek(1)
    pos = fileobj.tell()
    more = fileobj.read(1)
    if more:
        fileobj.seek(pos)
    return not more


def load(fileobj, *, name=None, placeholders=None, encoding='latin1'):
    """Load one pickle from ``fileobj`` with :class:`RestrictedUnpickler`.

    Parameters are those of :class:`RestrictedUnpickler`; returns the object.
    """
    return load_all(fileobj, name=name, placeholders=placeholders,
                    encoding=encoding, limit=1)[0]


def load_all(fileobj, *, name=None, placeholders=None, encoding='latin1', limit=None):
    """Load consecutive pickles from ``fileobj`` until it ends.

    The 2015 code saved a network as several pickles written one after another
    into one file; this reads them all, each through the restricted unpickler.

    Parameters
    ----------
    fileobj : binary file object
        Readable; must have ``peek`` or be seekable (plain files, gzip files
        and ``io.BytesIO`` all qualify).
    name, placeholders, encoding
        As for :class:`RestrictedUnpickler`.
    limit : int, optional
        Stop after this many objects.

    Returns
    -------
    list
        The objects in file order.

    Raises
    ------
    pickle.UnpicklingError
        On a forbidden global, an empty file, or a truncated or corrupt pickle.
    """
    name = name if name is not None else str(getattr(fileobj, 'name', '<pickle>'))
    if not (hasattr(fileobj, 'peek') or fileobj.seekable()):
        fileobj = io.BytesIO(fileobj.read())
    objects = []
    while limit is None or len(objects) < limit:
        try:
            if _at_eof(fileobj):
                break
            unpickler = RestrictedUnpickler(fileobj, name=name, placeholders=placeholders,
                                            encoding=encoding)
            objects.append(unpickler.load())
        except UnpicklingError as exc:
            if str(exc).startswith(name + ':'):
                raise  # our own refusal, already names the file
            raise UnpicklingError(f"{name}: not a readable pickle ({exc})") from exc
        except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                OSError) as exc:
            raise UnpicklingError(
                f"{name}: not a readable pickle (truncated or corrupt: "
                f"{type(exc).__name__}: {exc})") from exc
    if not objects:
        raise UnpicklingError(f"{name}: no pickle in the file (it is empty)")
    return objects


class _Py2Pickler(pickle._Pickler):
    """Pure-Python pickler that writes what Python 2's cPickle wrote."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        # Python 2 ``str``: numpy array data and text alike.
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack('<i', len(obj)) + obj)

    def save_str(self, obj):
        if obj.isascii():
            self.save_bytes(obj.encode('ascii'))
        else:  # Python 2 ``unicode``
            super().save_str(obj)

    def save_global(self, obj, name=None):
        name = name or getattr(obj, '__qualname__', obj.__name__)
        module = pickle.whichmodule(obj, name)
        if module.split('.')[:2] == ['numpy', '_core']:  # numpy 2 renamed numpy.core
            module = 'numpy.core' + module[len('numpy._core'):]
        module = {'builtins': '__builtin__'}.get(module, module)
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode('ascii'))
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def dumps_py2(obj):
    """Pickle ``obj`` the way Python 2's cPickle (protocol 2) would.

    Text and array data become Python 2 ``str`` records and numpy globals are
    named ``numpy.core.*``, as in the 2015 files. Used to export models in the
    2015 layout (``vgsn.compat2015.convert``) and by tests that need such files; nothing
    else in vgsn writes pickles (run checkpoints are HDF5).

    Returns
    -------
    bytes
    """
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()
