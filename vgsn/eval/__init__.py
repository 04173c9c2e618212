"""Evaluation: the Gaussian Parzen estimate (GPDE), the variational bound, importance-weighted
log-likelihood, chain scores and the digit classifier they read digits with, and figures."""
