"""Datasets: MNIST, TFD and its public stand-ins, the bundled digits; safe reading of pickles."""
