"""The test suite runs on the C mode, the reference its float64 and finite-difference
checks are written for, whatever ``vgsn.backend.default_mode()`` would pick (JAX where
jax is installed); ``tests/test_backends.py`` builds JAX and Numba functions explicitly
and compares them with C. ``VGSN_TEST_MODE=JAX`` runs the whole suite on another mode.

Set before any test module imports ``vgsn.backend`` (the mode is chosen at import);
child processes the tests start inherit it unless a test sets its own.
"""
import os

os.environ["VGSN_MODE"] = os.environ.get("VGSN_TEST_MODE", os.environ.get("VGSN_MODE", "C"))
