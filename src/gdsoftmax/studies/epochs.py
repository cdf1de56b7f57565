"""The epochs at which a report reads a run's early behaviour.

>>> early_epoch(100), early_epoch(30), early_epoch(8)
(5, 5, 2)
"""

from __future__ import annotations

__all__ = ["CURRICULUM_EPOCH", "EARLY_EPOCH", "early_epoch"]

EARLY_EPOCH = 5  # "early convergence" is read at this epoch, or at a quarter of a shorter run
CURRICULUM_EPOCH = 2  # the spread of training p_c (easy samples learned first) is read here


def early_epoch(epochs: int) -> int:
    """Epoch 5, or a quarter of a run shorter than 20 epochs (epoch 2 of 8): before a first lr step at 50 %."""
    return max(1, min(EARLY_EPOCH, epochs // 4))
