"""Seeded symmetric label noise (``kdtutorial.common.labelnoise.flip_labels``): exactly ``round(share * n)`` rows
flipped (shares 0 and 1 included, n = 0 too), each to another class and uniformly among the others for 3 and 4
classes, the others kept, the same rows for the same seed and other rows for another, and ``ValueError`` naming the
argument for a bad share, non-integer labels, labels out of range and fewer than two classes."""
import numpy as np
import pytest

from kdtutorial.common.labelnoise import flip_labels


@pytest.mark.parametrize("n, share", [(10, 0.0), (10, 0.3), (101, 0.1), (7, 0.5), (20, 1.0), (3, 0.49)])
def test_flips_exactly_the_share_and_only_to_other_labels(n, share):
    y = np.random.default_rng(0).integers(0, 2, n)
    noisy, flipped = flip_labels(y, share, seed=1)
    assert flipped.sum() == round(share * n)
    assert (noisy[flipped] != y[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    assert noisy.dtype == y.dtype and y.tolist() == np.random.default_rng(0).integers(0, 2, n).tolist()  # input kept


@pytest.mark.parametrize("n", [0, 1, 2, 9, 250, 1001])
@pytest.mark.parametrize("share", [0.0, 0.05, 0.5, 0.77, 1.0])
def test_flip_count_and_mask_for_many_sizes_and_shares(n, share):
    y = np.random.default_rng(n).integers(0, 3, n)
    noisy, flipped = flip_labels(y, share, seed=3, n_classes=3)
    assert noisy.shape == flipped.shape == (n,) and flipped.dtype == bool
    assert int(flipped.sum()) == int(round(share * n))
    assert np.array_equal(flipped, noisy != y)  # the mask is exactly the rows that changed
    assert noisy.min(initial=0) >= 0 and noisy.max(initial=0) < 3


def test_two_classes_flip_to_the_other_one_and_a_list_is_accepted():
    noisy, flipped = flip_labels([0, 1, 1, 0, 1, 0, 0, 1], 1.0, seed=0)
    assert flipped.all() and noisy.tolist() == [1, 0, 0, 1, 0, 1, 1, 0]
    noisy, flipped = flip_labels([1, 1, 1, 1], 0.5, seed=0)  # max label 1: two classes by default
    assert sorted(noisy.tolist()) == [0, 0, 1, 1] and int(flipped.sum()) == 2
    noisy, flipped = flip_labels(np.zeros(400, dtype=int), 1.0, seed=2, n_classes=3)  # a class no row holds
    assert flipped.all() and set(np.unique(noisy)) == {1, 2}


def test_same_seed_same_rows_other_seed_other_rows():
    y = np.arange(1000) % 2
    a, fa = flip_labels(y, 0.3, seed=4)
    b, fb = flip_labels(y, 0.3, seed=4)
    c, fc = flip_labels(y, 0.3, seed=5)
    assert np.array_equal(a, b) and np.array_equal(fa, fb) and not np.array_equal(fa, fc)
    assert fc.sum() == fa.sum() == 300


def test_multi_class_flips_go_uniformly_to_the_other_classes():
    y = np.zeros(30000, dtype=np.int64)
    noisy, flipped = flip_labels(y, 0.6, seed=0, n_classes=4)
    counts = np.bincount(noisy[flipped], minlength=4)
    assert counts[0] == 0 and np.allclose(counts[1:] / flipped.sum(), 1 / 3, atol=0.02)


@pytest.mark.parametrize("k", [3, 4])
def test_every_class_flips_uniformly_to_each_other_class(k):
    y = np.arange(12_000) % k
    noisy, flipped = flip_labels(y, 1.0, seed=5, n_classes=k)
    assert flipped.all()
    for c in range(k):
        counts = np.bincount(noisy[y == c], minlength=k)
        expected = (y == c).sum() / (k - 1)  # 2000 or 1333 rows per other class; a binomial sd is about 30
        assert counts[c] == 0 and np.all(np.abs(np.delete(counts, c) - expected) < 0.08 * expected), (c, counts)


@pytest.mark.parametrize("labels, share, message", [
    ([0, 1], 1.5, "share = 1.5 is not allowed"), ([0, 1], -0.1, "share = -0.1 is not allowed"),
    ([0, 1], True, "share = True is not allowed"), ([0.5, 1.0], 0.1, "labels must be a 1-D array of integer"),
    ([[0, 1]], 0.1, "labels must be a 1-D array"), ([0, 5], 0.1, "labels must be class ids 0 .. 1")])
def test_bad_input_names_the_parameter(labels, share, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        flip_labels(np.asarray(labels), share, seed=0, n_classes=2 if message.startswith("labels must be class") else None)


@pytest.mark.parametrize("share", [float("nan"), "0.3", None, 1 + 1e-9])
def test_more_bad_shares_are_refused_naming_share(share):
    with pytest.raises(ValueError, match=r"share = .* is not allowed: the share of labels to flip"):
        flip_labels([0, 1, 0, 1], share, seed=0)


@pytest.mark.parametrize("labels", [[True, False], ["a", "b"], np.zeros((2, 2), dtype=int)])
def test_more_bad_labels_are_refused_naming_labels(labels):
    with pytest.raises(ValueError, match="labels must be a 1-D array of integer class ids"):
        flip_labels(labels, 0.5, seed=0)


def test_labels_outside_the_classes_and_a_single_class_are_refused():
    with pytest.raises(ValueError, match=r"labels must be class ids 0 \.\. 1, found -1 \.\. 1"):
        flip_labels([0, -1, 1], 0.5, seed=0)
    with pytest.raises(ValueError, match=r"labels must be class ids 0 \.\. 2, found 0 \.\. 3"):
        flip_labels([0, 3, 1], 0.5, seed=0, n_classes=3)
    with pytest.raises(ValueError, match="n_classes = 1 is not allowed"):  # nowhere to flip to
        flip_labels([0, 0, 0], 0.5, seed=0, n_classes=1)
