"""Tests for trainer.data: loaders on synthetic folders of each layout, batching, normalisation."""

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from records.encoding import Normalisation
from trainer import data, datasets
from trainer.data import (
    DATASETS,
    DatasetBundle,
    DatasetError,
    batches,
    load_dataset,
    num_batches,
    shared_data_root,
    validation_split,
)

# Distinct, saturated colours survive JPEG 4:2:0 within a few grey levels.
COLOURS = {"cat": (200, 30, 30), "airplane": (30, 200, 30), "bird": (30, 30, 200)}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Keep every test's decoded-image cache inside its own tmp folder."""
    monkeypatch.setenv("HYBRID_SNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_bundle(n=20, augment=False):
    """A 3-channel 12x12 bundle whose pixel values identify the sample."""
    x = torch.arange(n * 3 * 12 * 12, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 3, 12, 12)
    y = torch.arange(n) % 4
    return DatasetBundle("synthetic", x, y, x[:5], y[:5], ["a", "b", "c", "d"],
                         Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), augment, "memory")


def jpeg_bytes(colour, size=32):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_tar(path, per_class=(3, 2), colours=COLOURS):
    """A tar.gz of train/<class>/NNNN.jpg and test/<class>/NNNN.jpg, classes stored out of order."""
    with tarfile.open(path, "w:gz") as tar:
        for split, count in zip(("train", "test"), per_class):
            for cls, colour in colours.items():
                payload = jpeg_bytes(colour)
                for i in range(count):
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))


def write_image_tree(root, split_names, classes, size, per_class=2, fmt="PNG"):
    for split in split_names:
        for cls, colour in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", size, colour).save(folder / f"{i}.{fmt.lower()}", format=fmt)


def write_idx(path, array, magic=None):
    header = (magic if magic is not None else 0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(folder, n_train=7, n_test=3, image_magic=None):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), image_magic)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


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


def test_batches_reject_bad_arguments(digits):
    with pytest.raises(ValueError, match="split"):
        batches(digits, "val", 10, shuffle=False)
    with pytest.raises(ValueError, match="channels"):
        batches(digits, "train", 10, shuffle=False, normalisation=data._CIFAR10_NORM)


# ---------------------------------------------------------------- MNIST


def test_real_mnist():
    folder = shared_data_root() / "mnist"
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{folder}: shared MNIST files absent")
    bundle = load_dataset("mnist")
    assert bundle.train_x.shape == (60000, 1, 28, 28) and bundle.test_x.shape == (10000, 1, 28, 28)
    assert bundle.train_y.min() == 0 and bundle.train_y.max() == 9
    assert bundle.test_y.min() == 0 and bundle.test_y.max() == 9
    assert bundle.normalisation == Normalisation((0.0,), (1.0,)) and not bundle.augment


def test_synthetic_mnist(tmp_path):
    write_mnist(tmp_path / "mnist")
    bundle = load_dataset("mnist", tmp_path)
    # A class-sorted test split is put in a seeded order (any prefix samples every class).
    assert bundle.train_x.shape == (7, 1, 28, 28) and sorted(bundle.test_y.tolist()) == [0, 1, 2]
    assert bundle.test_y.tolist() == load_dataset("mnist", tmp_path).test_y.tolist() != [0, 1, 2]
    with gzip.open(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(7, 28, 28)
    assert np.array_equal(bundle.train_x[:, 0].numpy(), raw)
    assert load_dataset("mnist", tmp_path / "mnist").train_x.shape == (7, 1, 28, 28)


def test_corrupt_mnist_names_the_file(tmp_path):
    write_mnist(tmp_path, image_magic=0x0000_0801)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz.*magic"):
        load_dataset("mnist", tmp_path)
    write_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(labels) as f:
        content = f.read()
    with gzip.open(labels, "wb") as f:
        f.write(content[:-1])
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path)


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_archive_decode_and_cache(tmp_path, monkeypatch, private_cache):
    write_tar(tmp_path / "cifar10-jpg.tar.gz")
    bundle = load_dataset("cifar10", tmp_path)
    assert bundle.class_names == ["airplane", "bird", "cat"]
    assert bundle.train_x.shape == (9, 3, 32, 32) and bundle.test_x.shape == (6, 3, 32, 32)
    assert bundle.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for x, y in zip(bundle.train_x, bundle.train_y):
        colour = torch.tensor(COLOURS[bundle.class_names[y]], dtype=torch.float32)
        assert (x.float().mean((1, 2)) - colour).abs().max() < 6
    assert bundle.augment and bundle.normalisation == data._CIFAR10_NORM
    assert bundle.source == str(tmp_path / "cifar10-jpg.tar.gz")
    cached = sorted(p.name for p in private_cache.rglob("*") if p.is_file())
    assert cached == ["meta.json", "test_x.npy", "test_y.npy", "train_x.npy", "train_y.npy"]

    def no_decoding(*_):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(datasets, "_decode_image", no_decoding)
    again = load_dataset("cifar10", tmp_path / "cifar10-jpg.tar.gz")
    assert torch.equal(again.train_x, bundle.train_x) and again.class_names == bundle.class_names

    # A changed archive must not reuse the stale cache.
    write_tar(tmp_path / "cifar10-jpg.tar.gz", per_class=(1, 1))
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_damaged_cache_is_rebuilt(tmp_path, private_cache):
    write_tar(tmp_path / "cifar10-jpg.tar.gz")
    first = load_dataset("cifar10", tmp_path)
    next(private_cache.rglob("train_x.npy")).write_bytes(b"not a numpy file")
    assert torch.equal(load_dataset("cifar10", tmp_path).train_x, first.train_x)


def test_cifar10_damaged_archive(tmp_path):
    write_tar(tmp_path / "cifar10-jpg.tar.gz")
    content = (tmp_path / "cifar10-jpg.tar.gz").read_bytes()
    (tmp_path / "cifar10-jpg.tar.gz").write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match="cifar10-jpg.tar.gz"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_extracted_folder(tmp_path):
    write_image_tree(tmp_path, ("train", "test"), COLOURS, (32, 32), fmt="PNG")
    bundle = load_dataset("cifar10", tmp_path)
    assert bundle.class_names == ["airplane", "bird", "cat"]
    assert bundle.train_x.shape == (6, 3, 32, 32)
    assert bundle.train_x[0, :, 0, 0].tolist() == list(COLOURS["airplane"])


def test_cifar10_pickle_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 9]}
        (folder / name).write_bytes(pickle.dumps(batch))
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    bundle = load_dataset("cifar10", tmp_path)
    assert bundle.train_x.shape == (20, 3, 32, 32) and bundle.test_x.shape == (4, 3, 32, 32)
    assert bundle.class_names[9] == "class9" and bundle.train_y[:4].tolist() == [0, 1, 2, 9]
    test_data = pickle.loads((folder / "test_batch").read_bytes())[b"data"]
    # The class-sorted test split comes in a seeded order; each image keeps its label.
    rows = [[0, 1, 2, 9].index(label) for label in bundle.test_y.tolist()]
    assert np.array_equal(bundle.test_x.numpy().reshape(4, 3072), test_data[rows])


class _RunsCode:
    """Unpickling this calls os.system: what a crafted data_batch_1 could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (__import__("os").system, (f"touch {self.marker}",))


def test_cifar_pickles_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}))
    with pytest.raises(DatasetError, match=r"data_batch_1: cannot unpickle .*posix\.system is not part of the CIFAR"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


# ---------------------------------------------------------------- CIFAR-100 and folder


def test_cifar100_pickle_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 6), ("test", 3)):
        split = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": list(range(n)), b"coarse_labels": [0] * n}
        (folder / name).write_bytes(pickle.dumps(split))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    for root in (tmp_path, folder):
        bundle = load_dataset("cifar100", root)
        assert bundle.train_x.shape == (6, 3, 32, 32) and bundle.num_classes == 100
        assert sorted(bundle.test_y.tolist()) == [0, 1, 2] and bundle.class_names[:2] == ["c0", "c1"]
        assert bundle.augment and bundle.normalisation == data._CIFAR100_NORM


def test_folder_layout(tmp_path):
    classes = {"zebra": (250, 250, 250), "ant": (0, 0, 0)}
    write_image_tree(tmp_path, ("train", "val"), classes, (40, 30), fmt="JPEG")
    bundle = load_dataset("folder", tmp_path, image_size=16)
    assert bundle.class_names == ["ant", "zebra"] and bundle.input_shape == (3, 16, 16)
    assert bundle.train_y.tolist() == [0, 0, 1, 1] and len(bundle.test_y) == 4
    assert not bundle.augment
    mean, std = bundle.normalisation.mean, bundle.normalisation.std
    assert mean == pytest.approx((125 / 255,) * 3, abs=0.01)
    assert std == pytest.approx((2 * 125 / 255,) * 3, abs=0.01)
    assert load_dataset("folder", tmp_path).input_shape == (3, 32, 32)


def test_folder_needs_matching_classes(tmp_path):
    write_image_tree(tmp_path, ("train",), {"a": (1, 2, 3), "b": (4, 5, 6)}, (8, 8))
    write_image_tree(tmp_path, ("test",), {"a": (1, 2, 3)}, (8, 8))
    with pytest.raises(DatasetError, match="classes"):
        load_dataset("folder", tmp_path)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "folder"])
def test_missing_path_names_it(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="nowhere.*not found.*HYBRID_SNN_DATA"):
        load_dataset(name, missing)


def test_unknown_name_and_bad_image_size():
    with pytest.raises(DatasetError, match="unknown data set 'imagenet'.*" + ", ".join(DATASETS)):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="--image-size"):
        load_dataset("digits", image_size=32)


def test_a_damaged_cache_is_rebuilt_not_blamed_on_the_data(tmp_path, monkeypatch):
    """Cached arrays that lost labels (or any other inconsistency) cost a rebuild; the data
    folder is never reported as bad for them."""
    import numpy as np

    from trainer import datasets

    monkeypatch.setenv("HYBRID_SNN_CACHE", str(tmp_path))
    builds = []

    def build():
        builds.append(1)
        x = np.zeros((6, 1, 4, 4), np.uint8)
        return datasets._Splits(x, np.arange(6) % 3, x[:3], np.arange(3), ["a", "b", "c"])

    datasets._cached("toy", "k" * 32, build)
    folder = next(tmp_path.iterdir())
    np.save(folder / "train_y.npy", np.arange(4))                 # damaged: two labels lost
    splits = datasets._cached("toy", "k" * 32, build)
    assert len(builds) == 2 and len(splits.train_y) == 6
    assert len(datasets._cached("toy", "k" * 32, build).train_y) == 6 and len(builds) == 2   # and kept
