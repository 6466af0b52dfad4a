"""The learning-rate schedule: linear warm-up then cosine decay, stepped every iteration (§2.15).

lr(t) = lr·(1e-8 + (1 − 1e-8)·t/W) for t < W warm-up iterations, then
lr(t) = lr·½(1 + cos(π·(t − W)/(T − W))) down to 0 at the last iteration T.

Deviation, documented: the author's chained LinearLR + CosineAnnealingLR(last_epoch = −W)
overshoots to ≈1.019·lr at the end of warm-up (spec §2.15); we implement the intended
schedule, which peaks at exactly lr.
"""

from __future__ import annotations

import math


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (0-based)."""
    if total <= 0:
        raise ValueError(f"total: expected a positive number of iterations, got {total}")
    if warmup > 0 and step < warmup:
        return 1e-8 + (1.0 - 1e-8) * step / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0), span) / span
    return 0.5 * (1.0 + math.cos(math.pi * progress))
