"""Readers of the offline image data sets: each returns uint8 images (N, C, H, W), int64
labels and class names per split. Nothing is ever downloaded: data come from the shared
folder (`HYBRID_SNN_DATA`, else `<repo>/../shared/datasets`) or a folder the user names,
except `digits`, which ships inside scikit-learn. Decoded images are cached in a user
cache folder, keyed by a hash of the source (``_cached``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import pickle
import tarfile
import warnings
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

from records.atomic import atomic_file
from records.cli import one_line

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
_CIFAR10_ARCHIVE = "cifar10-jpg.tar.gz"
CIFAR_SIZE = 32
SPLITS = ("train", "test")
# Bump when the cached array layout changes, so old caches are not reused.
_CACHE_VERSION = 1
_ARRAY_NAMES = ("train_x", "train_y", "test_x", "test_y")


class DatasetError(ValueError):
    """A data set is missing, malformed or misnamed; the message names the path and the problem."""


class _Splits(NamedTuple):
    """Decoded arrays as loaders (and the cache) hand them over: x uint8 NCHW, y int64."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]


def shared_data_root() -> Path:
    """The offline data folder: $HYBRID_SNN_DATA, else <repo root>/../shared/datasets."""
    env = os.environ.get("HYBRID_SNN_DATA")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"


def cache_root() -> Path:
    """Where decoded image arrays are cached: $HYBRID_SNN_CACHE, else ~/.cache/hybrid-snn."""
    env = os.environ.get("HYBRID_SNN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hybrid-snn"


def _not_found(path: Path, what: str) -> DatasetError:
    return DatasetError(f"{path}: {what} not found (set --data-root or HYBRID_SNN_DATA)")


def check_labels(splits: _Splits, source: str) -> None:
    """A data set a classifier can learn from: two classes or more, both splits non-empty,
    labels in range, and one image per label (that the training images hold two classes
    is checked after subsetting, ``trainer.data.load_dataset``)."""
    n = len(splits.class_names)
    if n < 2:
        raise DatasetError(f"{source}: {n} class(es) ({', '.join(splits.class_names) or 'none'}); "
                           "a classifier needs at least 2")
    for split, x, y in (("train", splits.train_x, splits.train_y), ("test", splits.test_x, splits.test_y)):
        if len(y) == 0:
            raise DatasetError(f"{source}: the {split} split is empty")
        if len(x) != len(y):
            raise DatasetError(f"{source}: the {split} split has {len(x)} images but {len(y)} labels")
        if y.min() < 0 or y.max() >= n:
            raise DatasetError(f"{source}: {split} labels outside 0..{n - 1}")


def load_digits(seed: int) -> _Splits:
    """sklearn's 8x8 digits (values 0..16) as uint8, with a seeded stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    return _Splits(train_x, train_y, test_x, test_y, [str(d) for d in range(10)])


# ---------------------------------------------------------------- MNIST (IDX)

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_mnist(root: Path) -> tuple[_Splits, str]:
    """The four IDX files, gzipped or not, in root, root/mnist or root/MNIST/raw."""
    folder = next(
        (d for d in (root / "mnist", root / "MNIST" / "raw", root) if _idx_file(d, "train-images-idx3-ubyte")),
        None,
    )
    if folder is None:
        raise _not_found(root, "MNIST (train-images-idx3-ubyte.gz and the other IDX files)")
    arrays = []
    for images_name, labels_name in _MNIST_FILES.values():
        images = _read_idx(_require_idx(folder, images_name), ndim=3)
        labels = _read_idx(_require_idx(folder, labels_name), ndim=1)
        if len(images) != len(labels):
            raise DatasetError(
                f"{folder}: {images_name} has {len(images)} images but {labels_name} {len(labels)} labels"
            )
        arrays += [images[:, None], labels.astype(np.int64)]
    return _Splits(*arrays, [str(d) for d in range(10)]), str(folder)


def _idx_file(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)


def _require_idx(folder: Path, stem: str) -> Path:
    path = _idx_file(folder, stem)
    if path is None:
        raise _not_found(folder / f"{stem}.gz", "MNIST file")
    return path


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic 0x0000080<ndim>), checking magic and length."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
    magic = 0x0800 | ndim
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        raise DatasetError(f"{path}: bad IDX magic {data[:4].hex()} (expected {magic:08x}: uint8, {ndim} dims)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = [int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4)]
    if len(data) - header != math.prod(dims):
        raise DatasetError(f"{path}: {len(data) - header} data bytes but the header says {dims} (truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100


def load_cifar10(root: Path) -> tuple[_Splits, str]:
    """The shared JPEG archive, the python-pickle batches, or extracted train/ and test/ folders."""
    archive = root if root.is_file() else root / _CIFAR10_ARCHIVE
    if archive.is_file():
        key = _sha256(archive)
        return _cached("cifar10", key, lambda: _decode_archive(archive)), str(archive)
    for folder in (root / "cifar-10-batches-py", root):
        if (folder / "data_batch_1").is_file():
            return _read_cifar10_pickles(folder), str(folder)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _load_image_tree("cifar10", root, root / "test", CIFAR_SIZE), str(root)
    raise _not_found(root, f"CIFAR-10 ({_CIFAR10_ARCHIVE}, cifar-10-batches-py/ or train/ and test/ folders)")


def _read_cifar10_pickles(folder: Path) -> _Splits:
    train = [_cifar_batch(folder / f"data_batch_{i}", b"labels") for i in range(1, 6)]
    test_x, test_y = _cifar_batch(folder / "test_batch", b"labels")
    names = _pickle_field(folder / "batches.meta", b"label_names")
    return _Splits(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        test_x,
        test_y,
        [n.decode() for n in names],
    )


def load_cifar100(root: Path) -> tuple[_Splits, str]:
    """The python-pickle layout (train, test, meta), in root/cifar-100-python or root itself."""
    folder = next((d for d in (root / "cifar-100-python", root) if (d / "train").is_file()), None)
    if folder is None:
        raise _not_found(root, "CIFAR-100 (cifar-100-python/ with train, test and meta)")
    train_x, train_y = _cifar_batch(folder / "train", b"fine_labels")
    test_x, test_y = _cifar_batch(folder / "test", b"fine_labels")
    names = _pickle_field(folder / "meta", b"fine_label_names")
    return _Splits(train_x, train_y, test_x, test_y, [n.decode() for n in names]), str(folder)


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle: b'data' rows of 3072 bytes (R, G, B planes of 32x32) and labels."""
    data = np.asarray(_pickle_field(path, b"data"), dtype=np.uint8)
    labels = np.asarray(_pickle_field(path, label_key), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * CIFAR_SIZE**2 or len(data) != len(labels):
        raise DatasetError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, CIFAR_SIZE, CIFAR_SIZE), labels


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what the CIFAR python format holds -- dicts, lists, bytes, strings,
    numbers and numpy arrays -- so a crafted file cannot name any other callable, and
    cannot run code."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of the CIFAR format (refused, not run)")


def _pickle_field(path: Path, key: bytes):
    if not path.is_file():
        raise _not_found(path, "CIFAR pickle file")
    try:
        with open(path, "rb") as f:
            content = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a damaged pickle raises almost any exception type
        raise DatasetError(f"{path}: cannot unpickle ({type(e).__name__}: {e})") from e
    if not isinstance(content, dict) or key not in content:
        raise DatasetError(f"{path}: no {key!r} entry")
    return content[key]


# ---------------------------------------------------------------- image folders


def load_folder(root: Path, size: int) -> tuple[_Splits, str]:
    """ImageNet-style root/train/<class>/* and root/val/<class>/* (or root/test)."""
    if not (root / "train").is_dir():
        raise _not_found(root / "train", "image folder train/<class>/")
    eval_dir = next((d for d in (root / "val", root / "test") if d.is_dir()), None)
    if eval_dir is None:
        raise _not_found(root / "val", "image folder val/<class>/ (or test/)")
    return _load_image_tree("folder", root, eval_dir, size), str(root)


def _load_image_tree(cache_name: str, root: Path, test_dir: Path, size: int) -> _Splits:
    """Decode root/train/<class>/* and test_dir/<class>/*, cached by a fingerprint of the file list."""
    entries = {"train": _scan_split(root / "train"), "test": _scan_split(test_dir)}
    digest = hashlib.sha256(f"{size}\n".encode())
    for split, items in entries.items():
        for cls, name, path in items:
            st = path.stat()
            digest.update(f"{split}/{cls}/{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return _cached(cache_name, digest.hexdigest(), lambda: _decode_splits(entries, str(root), size))


def _scan_split(split_dir: Path) -> list[tuple[str, str, Path]]:
    """(class, file name, path) for every image in split_dir/<class>/; an empty class is an error."""
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    entries = []
    for class_dir in classes:
        images = [
            p for p in class_dir.iterdir()
            if p.is_file() and p.suffix.lower() in _IMAGE_EXTS and not p.name.startswith(".")
        ]
        if not images:
            raise DatasetError(f"{class_dir}: no images ({', '.join(_IMAGE_EXTS)})")
        entries += [(class_dir.name, p.name, p) for p in images]
    return entries


def _decode_archive(archive: Path) -> _Splits:
    """Read every train/<class>/* and test/<class>/* image of a tar(.gz) into memory, then decode."""
    entries: dict[str, list] = {split: [] for split in SPLITS}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (
                    member.isfile()
                    and len(parts) >= 3
                    and parts[-3] in entries
                    and PurePosixPath(parts[-1]).suffix.lower() in _IMAGE_EXTS
                    and not parts[-1].startswith(".")
                ):
                    data = io.BytesIO(tar.extractfile(member).read())
                    entries[parts[-3]].append((parts[-2], parts[-1], data))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{archive}: cannot read the archive ({e})") from e
    return _decode_splits(entries, str(archive), CIFAR_SIZE)


def _decode_splits(entries: dict[str, list], where: str, size: int) -> _Splits:
    """Decode (class, name, source) entries; class folders in sorted order give the labels."""
    class_names = sorted({cls for cls, _, _ in entries["train"]})
    if not class_names:
        raise DatasetError(f"{where}: no training images (expected train/<class>/*.jpg)")
    test_classes = sorted({cls for cls, _, _ in entries["test"]})
    if test_classes != class_names:
        raise DatasetError(f"{where}: test/val classes {test_classes} differ from train classes {class_names}")
    label = {cls: i for i, cls in enumerate(class_names)}
    arrays = []
    for split in SPLITS:
        items = sorted(entries[split], key=lambda e: (e[0], e[1]))
        x = np.empty((len(items), size, size, 3), dtype=np.uint8)
        for i, (cls, name, source) in enumerate(items):
            try:
                x[i] = _decode_image(source, size)
            except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise DatasetError(f"{where}: cannot decode {split}/{cls}/{name} ({one_line(str(e))[:200]})") from None
        labels = np.array([label[cls] for cls, _, _ in items], dtype=np.int64)
        arrays += [np.ascontiguousarray(x.transpose(0, 3, 1, 2)), labels]
    return _Splits(*arrays, class_names)


def _decode_image(source, size: int) -> np.ndarray:
    """One image file (path or file object) as RGB uint8 (size, size, 3), bilinear-resized if needed;
    an image of more pixels than PIL's bomb limit (89 M) is an error before it is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(source)
    with img:
        if img.size != (size, size):
            img.draft("RGB", (size, size))  # lets JPEG decode at 1/2..1/8 scale: large photos load fast
        rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


# ---------------------------------------------------------------- cache


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _consistent(splits: _Splits) -> _Splits:
    """The cached arrays as the loaders make them (uint8 NCHW images, as many int64 labels,
    each a class index), else ValueError: a damaged cache is rebuilt, not reported as bad data."""
    classes = splits.class_names
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ValueError("cached class names")
    for x, y in ((splits.train_x, splits.train_y), (splits.test_x, splits.test_y)):
        if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != (len(x),) or \
                (y.size and not 0 <= int(y.min()) <= int(y.max()) < len(classes)):
            raise ValueError("cached arrays")
    if splits.train_x.shape[1:] != splits.test_x.shape[1:]:
        raise ValueError("cached shapes")
    return splits


def _cached(name: str, key: str, build: Callable[[], _Splits]) -> _Splits:
    """Decoded arrays from the cache folder for `key`, else build them and store them atomically.

    The key is a content hash (or a file-list fingerprint), so a changed source never reuses
    a stale cache; a damaged or unwritable cache only costs a rebuild.
    """
    folder = cache_root() / f"{name}-v{_CACHE_VERSION}-{key[:16]}"
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta["key"] == key:
            arrays = [np.load(folder / f"{a}.npy", allow_pickle=False) for a in _ARRAY_NAMES]
            return _consistent(_Splits(*arrays, meta["class_names"]))
    except (OSError, ValueError, EOFError, KeyError, TypeError):
        pass  # absent or damaged (never blamed on the data folder): rebuild below
    splits = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for array_name in _ARRAY_NAMES:
            with atomic_file(folder / f"{array_name}.npy") as f:
                np.save(f, getattr(splits, array_name))
        # meta.json goes last: its presence marks a complete cache.
        with atomic_file(folder / "meta.json") as f:
            f.write(json.dumps({"key": key, "class_names": splits.class_names}).encode())
    except OSError as e:
        warnings.warn(f"{folder}: cannot write the data cache ({e}); images will be decoded again next time")
    return splits
