"""The schedules of a run: pure functions of the update index within a phase.

:func:`lr_at` (linear warm-up, then x decay every N updates), :func:`kl_weight_at`
(Eq. 5's lambda rising linearly from ``start`` to lambda), :func:`momentum_at` (a
momentum switch and warm-up, the TFD script's) and :func:`vae_hyper_at` (the 1-step
VAE's hyperparameters at an update; ``vgsn.run.train`` writes them into the models
before every update).
"""

__all__ = ["lr_at", "kl_weight_at", "momentum_at", "vae_hyper_at"]


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


def momentum_at(update, base, late=None, switch=0, warmup=0):
    """SGD momentum beta at ``update``: ``base`` before update ``switch``, ``late``
    from it on (``late=None`` or ``switch=0``: never), times ``min(1, update / warmup)``
    (``warmup=0``: no warm-up).

    ``TFDWalkoutTest.py`` (ICML-2015 f1bf969) pre-training: ``momentum_at(i, 0.5, 0.9,
    50000, 5000)``, its 0.5 for i < 50,000 else 0.9 (l. 196-201) passed as
    ``mom_1=scale*momentum`` with ``scale = min(1, i/5000)`` (l. 193, 216-217).
    """
    update = int(update)
    if update < 0:
        raise ValueError(f"update must be >= 0, got {update}")
    value = float(late) if late is not None and switch > 0 and update >= switch else float(base)
    if warmup > 0:
        value *= min(1.0, update / float(warmup))
    return value


def vae_hyper_at(c, u):
    """The 1-step VAE's hyperparameters at update ``u`` of preset ``c``: the
    pre-training schedule, which the ``vae`` branch continues after the fork; with
    ``momentum`` when the preset schedules it (``c.momentum_scheduled``)."""
    out = dict(lr=lr_at(u, c.pretrain_lr, c.pretrain_warmup, c.pretrain_lr_decay,
                        c.pretrain_lr_decay_every),
               lam_kl=kl_weight_at(u, c.lam_kl, c.kl_warmup, c.kl_warmup_from),
               gamma_kl=c.gamma_kl,
               l2=c.pretrain_l2)
    if c.momentum_scheduled:
        base = c.momentum if c.pretrain_momentum is None else c.pretrain_momentum
        out["momentum"] = momentum_at(u, base, c.pretrain_momentum_late,
                                      c.pretrain_momentum_switch, c.pretrain_momentum_warmup)
    return out
