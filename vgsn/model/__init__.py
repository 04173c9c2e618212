"""The method, in the paper's order: layers and SGD updates, the networks (q, p and the guide),
the objectives (Eq. 2, 5, 6, 7), the unrolled chain and its BPTT, and the two models:
``OneStageModel`` (``vae.py``) and ``VCGLoop`` (``vcg.py``). Nothing here reads or writes files."""
