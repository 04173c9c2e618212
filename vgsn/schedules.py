"""The schedules of a run: pure functions of the update index within a phase.

:func:`lr_at` (linear warm-up, then x decay every N updates), :func:`kl_weight_at`
(Eq. 5's lambda rising linearly from ``start`` to lambda) and :func:`vae_hyper_at`
(the 1-step VAE's hyperparameters at an update; ``vgsn.train`` writes them into the
models before every update).
"""

__all__ = ["lr_at", "kl_weight_at", "vae_hyper_at"]


def lr_at(update, base, warmup=0, decay=1.0, decay_every=0):
    """Learning rate for the 0-based ``update`` of a phase.

    ``base * min(1, (update + 1) / warmup) * decay ** (update // decay_every)``;
    ``warmup = 0`` skips the warm-up and ``decay_every = 0`` never decays
    (SPEC.md section 6: MNIST 5e-4, warm-up 10k, x0.9 every 20k).
    """
    update = int(update)
    if update < 0:
        raise ValueError(f"update must be >= 0, got {update}")
    scale = 1.0 if warmup <= 0 else min(1.0, (update + 1) / float(warmup))
    drops = update // int(decay_every) if decay_every > 0 else 0
    return float(base) * scale * float(decay) ** drops


def kl_weight_at(update, lam, warmup=0, start=1.0):
    """Eq. 5's lambda at ``update``: linear from ``start`` to ``lam`` over ``warmup``
    updates (the 2015 MNIST code's ``1 + scale * (lam - 1)``, ``scale = min(1, update /
    warmup)``; its TFD script's ``scale * lam`` is ``start=0``)."""
    update = int(update)
    if update < 0:
        raise ValueError(f"update must be >= 0, got {update}")
    if warmup <= 0:
        return float(lam)
    return float(start) + min(1.0, update / float(warmup)) * (float(lam) - float(start))


def vae_hyper_at(c, u):
    """The 1-step VAE's hyperparameters at update ``u`` of preset ``c``: the
    pre-training schedule, which the ``vae`` branch continues after the fork."""
    return dict(lr=lr_at(u, c.pretrain_lr, c.pretrain_warmup, c.pretrain_lr_decay,
                         c.pretrain_lr_decay_every),
                lam_kl=kl_weight_at(u, c.lam_kl, c.kl_warmup, c.kl_warmup_from),
                gamma_kl=c.gamma_kl,
                l2=c.pretrain_l2)
