import math

import pytest

from optkit.measure.paired import mcnemar_exact, paired_top1


def _pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


def test_counts_difference_and_interval():
    a, b = _pairs(both=85, only_a=10, only_b=0, neither=5)
    r = paired_top1(a, b)
    assert (r["images"], r["only_a"], r["only_b"]) == (100, 10, 0)
    assert r["top1_a"] == pytest.approx(0.95) and r["top1_b"] == pytest.approx(0.85)
    assert r["diff"] == pytest.approx(0.10)
    # per-image differences: ten 1s, ninety 0s: variance 0.1 - 0.1^2 = 0.09, standard error 0.03
    assert r["diff_ci95"] == pytest.approx([0.10 - 1.96 * 0.03, 0.10 + 1.96 * 0.03])
    assert r["mcnemar_p"] == pytest.approx(2 / 2**10)


def test_mcnemar_is_a_two_sided_binomial_tail():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # not significant at 5%
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # significant
    assert mcnemar_exact(8, 14) == mcnemar_exact(14, 8)
    expected = 2 * sum(math.comb(22, k) for k in range(9)) / 2**22
    assert mcnemar_exact(14, 8) == pytest.approx(expected) and 0.28 < expected < 0.29
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(7, 7) == 1.0  # the capped tail


def test_swapping_the_models_mirrors_the_result():
    a, b = _pairs(both=50, only_a=3, only_b=9, neither=8)
    ab, ba = paired_top1(a, b), paired_top1(b, a)
    assert ab["diff"] == pytest.approx(-ba["diff"]) and ab["mcnemar_p"] == ba["mcnemar_p"]
    assert ab["diff_ci95"] == pytest.approx([-ba["diff_ci95"][1], -ba["diff_ci95"][0]])


def test_refuses_lists_of_different_images():
    with pytest.raises(ValueError, match="same non-empty image list"):
        paired_top1([True, False], [True])
    with pytest.raises(ValueError, match="same non-empty image list"):
        paired_top1([], [])
