"""Tests for trainer.data: digits, subsets, the validation split, normalisation, batches
(the file readers of each layout: tests/test_datasets.py)."""

import numpy as np
import pytest
import torch

from records.encoding import Normalisation
from trainer import data
from trainer.data import DatasetBundle, DatasetError, batches, load_dataset, num_batches, validation_split


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_bundle(n=20, augment=False):
    """A 3-channel 12x12 bundle whose pixel values identify the sample."""
    x = torch.arange(n * 3 * 12 * 12, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 3, 12, 12)
    y = torch.arange(n) % 4
    return DatasetBundle("synthetic", x, y, x[:5], y[:5], ["a", "b", "c", "d"],
                         Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), augment, "memory")


# ---------------------------------------------------------------- digits and subsets


def test_digits_shapes_and_split(digits):
    assert digits.train_x.dtype == torch.uint8 and digits.train_y.dtype == torch.int64
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert len(digits.train_y) + len(digits.test_y) == 1797
    assert len(digits.test_y) == 360
    assert digits.train_x.max() == 255 and digits.train_x.min() == 0
    assert digits.class_names == [str(d) for d in range(10)]
    assert digits.normalisation == Normalisation((0.0,), (1.0,))
    assert not digits.augment
    # Stratified: every class in the test split at about its 20 % share.
    assert torch.bincount(digits.test_y, minlength=10).min() >= 34


def test_digits_split_depends_on_seed_only(digits):
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)
    assert not torch.equal(other.train_x, digits.train_x)


def test_subsets_are_seeded_and_stratified():
    a = load_dataset("digits", train_subset=100, test_subset=50, seed=3)
    b = load_dataset("digits", train_subset=100, test_subset=50, seed=3)
    assert len(a.train_y) == 100 and len(a.test_y) == 50
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert torch.bincount(a.train_y, minlength=10).tolist() == [10] * 10
    assert torch.bincount(a.test_y, minlength=10).tolist() == [5] * 10
    c = load_dataset("digits", train_subset=100, seed=4)
    assert not torch.equal(a.train_x, c.train_x)
    with pytest.raises(DatasetError, match="--train-subset"):
        load_dataset("digits", train_subset=0)


def test_subsets_remember_their_images():
    a = load_dataset("digits", train_subset=100, seed=3)
    whole = load_dataset("digits", seed=3)
    assert a.train_pool == len(whole.train_y) and len(a.train_index) == 100
    assert torch.equal(a.train_x, whole.train_x[torch.from_numpy(a.train_index)])
    with pytest.raises(ValueError, match="train_index"):
        DatasetBundle("x", a.train_x, a.train_y, a.test_x, a.test_y, a.class_names, a.normalisation, False, "m",
                      train_index=a.train_index[:5])


def _pool_part(n_pool, idx):
    """The images ``idx`` of a pool of ``n_pool`` as a bundle that remembers them."""
    x = torch.zeros(len(idx), 1, 2, 2, dtype=torch.uint8)
    y = torch.from_numpy(np.asarray(idx) % 3)
    return DatasetBundle("pool", x, y, x[:1], y[:1], ["a", "b", "c"], Normalisation((0.0,), (1.0,)), False,
                         "memory", train_index=np.asarray(idx), train_pool=n_pool)


def _held(bundle, fraction):
    train, val = validation_split(bundle, fraction)
    assert len(train.train_y) + len(val.test_y) == len(bundle.train_y)
    return set(bundle.train_index.tolist()) - set(train.train_index.tolist()), set(train.train_index.tolist())


def test_validation_split_of_the_whole_set_is_the_fixed_permutations_head():
    whole = _pool_part(1000, np.arange(1000))
    train, val = validation_split(whole, 0.1)
    order = np.random.default_rng([0, 7]).permutation(1000)
    assert train.train_index.tolist() == order[100:].tolist()
    assert val.test_y.tolist() == (order[:100] % 3).tolist()


def test_no_subset_or_seed_trains_on_another_ones_validation_images():
    """A continued fine-tuning on another seed's subset must not validate on images an earlier
    stage trained on (keep-best then keeps whatever fitted them), nor train on its held-out ones."""
    parts = [_pool_part(1000, np.sort(np.random.default_rng(s).choice(1000, 400, replace=False)))
             for s in range(4)] + [_pool_part(1000, np.arange(1000))]
    splits = [_held(p, 0.1) for p in parts]
    assert [20 <= len(held) <= 70 for held, _ in splits[:-1]] == [True] * 4     # about a tenth of 400
    assert len(splits[-1][0]) == 100
    for held, _ in splits:
        for _, trained in splits:
            assert not held & trained
    assert len(_held(_pool_part(1000, [5, 6]), 0.1)[0]) == 1     # a subset with no held-out image validates on one


# ---------------------------------------------------------------- normalisation


def test_normalisation_round_trip_and_validation():
    norm = data._CIFAR10_NORM
    assert Normalisation.from_dict(norm.to_dict()) == norm
    assert norm.std == pytest.approx((0.4940, 0.4870, 0.5232))
    assert Normalisation.from_dict({"mean": [0.5], "std": [2]}) == Normalisation((0.5,), (2.0,), 1.0)
    for bad in ({"mean": [0.5, 0.5], "std": [1.0]}, {"mean": [0.5], "std": [0.0]}, {"mean": [0.5]},
                {"mean": [0.5], "std": [1.0], "clip": 0}):
        with pytest.raises(ValueError):
            Normalisation.from_dict(bad)


def test_normalisation_apply():
    norm = Normalisation((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.rand(4, 3, 5, 5, dtype=torch.float64)
    out = norm.apply(x)
    assert out.dtype == torch.float32 and out.min() >= -1 and out.max() <= 1
    inner = (x - 0.5).abs() < 0.2
    assert torch.allclose(out[inner], ((x[inner] - 0.5) / 0.25).float(), atol=1e-6)
    pixels = (x * 255).round().to(torch.uint8)
    assert torch.allclose(norm.apply(pixels), norm.apply(pixels.float() / 255))
    assert torch.equal(Normalisation((0.0,), (1.0,)).apply(torch.tensor([[[[0.0, 0.3, 1.0]]]])),
                       torch.tensor([[[[0.0, 0.3, 1.0]]]]))
    with pytest.raises(ValueError, match="expected"):
        norm.apply(torch.rand(2, 1, 5, 5))


# ---------------------------------------------------------------- batches


def test_batches_cover_every_sample_once_without_shuffle(digits):
    got = list(batches(digits, "test", 64, shuffle=False))
    assert len(got) == num_batches(digits, "test", 64) == 6
    assert [len(y) for _, y in got][-1] == 360 - 5 * 64
    xs = torch.cat([x for x, _ in got])
    assert xs.dtype == torch.float32 and xs.shape == (360, 1, 8, 8)
    assert torch.equal(torch.cat([y for _, y in got]), digits.test_y)
    assert torch.allclose(xs, digits.test_x.float() / 255)


def test_shuffled_batches_are_a_permutation_and_deterministic(digits):
    def labels_and_sums(seed, epoch):
        got = list(batches(digits, "train", 100, shuffle=True, seed=seed, epoch=epoch))
        return torch.cat([y for _, y in got]), torch.cat([x.sum((1, 2, 3)) for x, _ in got])

    y0, s0 = labels_and_sums(0, 0)
    y0b, s0b = labels_and_sums(0, 0)
    assert torch.equal(y0, y0b) and torch.equal(s0, s0b)
    assert not torch.equal(y0, digits.train_y)
    assert torch.equal(y0.sort().values, digits.train_y.sort().values)
    assert not torch.equal(labels_and_sums(0, 1)[0], y0)
    assert not torch.equal(labels_and_sums(1, 0)[0], y0)


def test_augmentation_is_pad_crop_and_flip():
    bundle = small_bundle(augment=True)
    plain = torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, augment=False)])
    aug = torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, seed=5)])
    again = torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, seed=5)])
    assert aug.shape == plain.shape and torch.equal(aug, again)
    assert (aug != plain).flatten(1).any(1).sum() >= len(aug) // 2
    padded = torch.nn.functional.pad(plain, (4, 4, 4, 4))
    for i in range(len(aug)):
        windows = [padded[i, :, dy:dy + 12, dx:dx + 12] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(aug[i], w) or torch.equal(aug[i], w.flip(2)) for w in windows)
    test_batch, _ = next(batches(bundle, "test", 5, shuffle=False))
    assert torch.equal(test_batch, plain[:5])  # the test split is never augmented by default


def test_cutout_sets_one_square_per_image_to_zero_after_the_crop_and_flip():
    bundle = small_bundle(augment=True)
    shifted = Normalisation((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))     # no pixel nor the padding normalises to 0
    aug = torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, seed=5, normalisation=shifted)])
    cut = torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, seed=5, normalisation=shifted,
                                           cutout=4)])
    assert torch.equal(cut, torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, seed=5,
                                                             normalisation=shifted, cutout=4)]))
    assert (aug != 0).all()
    for a, c in zip(aug, cut):
        square = (c == 0).all(0)
        assert torch.equal(c[:, ~square], a[:, ~square]) and (c[:, square] == 0).all()
        rows, cols = square.nonzero(as_tuple=True)          # a 4x4 square, clipped at the border
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        assert r1 - r0 < 4 and c1 - c0 < 4 and len(rows) == (r1 - r0 + 1) * (c1 - c0 + 1)
        assert (r1 - r0 == 3 or r0 == 0 or r1 == 11) and (c1 - c0 == 3 or c0 == 0 or c1 == 11)
    aug = torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, seed=5)])
    # the crop and flip are the same draws as without Cutout; no Cutout on the test split or with augment off
    assert torch.equal(torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, seed=5, cutout=0)]), aug)
    plain = torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, augment=False)])
    assert torch.equal(torch.cat([x for x, _ in batches(bundle, "train", 8, shuffle=False, augment=False,
                                                        cutout=4)]), plain)
    assert torch.equal(next(batches(bundle, "test", 5, shuffle=False, cutout=4))[0], plain[:5])


def test_cutout_that_covers_the_image_is_refused():
    bundle = small_bundle()
    for side in (-1, 12):
        with pytest.raises(ValueError, match=f"cutout {side}: .* 0..11 .* 12x12"):
            batches(bundle, "train", 8, shuffle=False, cutout=side)
    batches(bundle, "train", 8, shuffle=False, cutout=11)


def test_batches_reject_bad_arguments(digits):
    with pytest.raises(ValueError, match="split"):
        batches(digits, "val", 10, shuffle=False)
    with pytest.raises(ValueError, match="channels"):
        batches(digits, "train", 10, shuffle=False, normalisation=data._CIFAR10_NORM)

