"""Two classifiers judged on the same images, image by image.

Top-1 on a val split of n images moves in steps of 1/n, and two INT8 models of one network disagree on a
few images either way: whether one is really more accurate is a question about those discordant images
only. McNemar's exact test asks how likely a split at least this uneven would be if each discordant image
were a fair coin; the difference's 95% interval is the normal approximation of the paired difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def paired_top1(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Per-image correctness of models a and b on the same images (same order) -> {images, top1_a, top1_b,
    only_a, only_b (images only that model gets right), diff (top1_a - top1_b), diff_ci95 [low, high],
    mcnemar_p (exact, two-sided)}."""
    n = len(a)
    if n == 0 or len(b) != n:
        raise ValueError(f"need the same non-empty image list for both models, got {len(a)} and {len(b)}")
    only_a = sum(bool(x) and not y for x, y in zip(a, b, strict=True))
    only_b = sum(bool(y) and not x for x, y in zip(a, b, strict=True))
    diff = (only_a - only_b) / n
    # variance of the mean of per-image differences d in {-1, 0, 1}: (sum d^2 - n mean^2) / n, over n
    se = math.sqrt(max(only_a + only_b - n * diff * diff, 0.0) / n) / math.sqrt(n)
    return {
        "images": n,
        "top1_a": sum(map(bool, a)) / n,
        "top1_b": sum(map(bool, b)) / n,
        "only_a": only_a,
        "only_b": only_b,
        "diff": diff,
        "diff_ci95": [diff - 1.96 * se, diff + 1.96 * se],
        "mcnemar_p": mcnemar_exact(only_a, only_b),
    }


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: twice the binomial(only_a + only_b, 1/2) tail at the smaller
    count, capped at 1 (1.0 when no image is discordant)."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**discordant)
