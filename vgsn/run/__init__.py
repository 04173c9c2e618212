"""One run: the command line, settings and presets, the training loop, the run folder
(metrics, log, report, figures), checkpoints and resume."""
