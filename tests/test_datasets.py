"""Tests for the data set readers (trainer.datasets, through trainer.data.load_dataset):
synthetic folders of each layout, the decode cache, and the errors that name the file."""

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
from trainer.data import DATASETS, DatasetError, load_dataset, shared_data_root

# Distinct, saturated colours survive JPEG 4:2:0 within a few grey levels.
COLOURS = {"cat": (200, 30, 30), "airplane": (30, 200, 30), "bird": (30, 30, 200)}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Keep every test's decoded-image cache inside its own tmp folder."""
    monkeypatch.setenv("HYBRID_SNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"

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
