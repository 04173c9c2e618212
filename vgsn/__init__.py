"""vgsn: Variational Generative Stochastic Networks with Collaborative Shaping (ICML 2015)."""
__version__ = "0.1.0"
