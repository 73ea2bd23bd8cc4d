"""Data sets as the trainer feeds them: a ``DatasetBundle`` (uint8 images, labels, the
normalisation), seeded class-proportional subsets, the fixed validation split, and
``batches`` of normalised, augmented images. The readers of the files are ``trainer.datasets``.

ANN training, conversion, STDB fine-tuning and export all use the same ``Normalisation``
record (``records.encoding``), because the paper's public code normalised ANN and SNN
inputs differently (docs/method.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from records.dataref import DataRef
from records.encoding import Normalisation
from trainer.datasets import (CIFAR_SIZE, SPLITS, DatasetError, check_labels, load_cifar10, load_cifar100,
                              load_digits, load_folder, load_mnist, shared_data_root)

if TYPE_CHECKING:
    from trainer.checkpoint import Checkpoint

DATASETS = ("digits", "mnist", "cifar10", "cifar100", "folder")
_CROP_PAD = 4


@dataclass
class DatasetBundle:
    """A loaded data set: uint8 images (N, C, H, W), int64 labels, and how to feed them."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    normalisation: Normalisation
    augment: bool
    source: str
    # Where the training images come from: their positions in the source's training split
    # (None: all of it, in order) and that split's size. The validation split is fixed by
    # these (``validation_split``), whatever subset or seed a stage draws.
    train_index: np.ndarray | None = None
    train_pool: int | None = None

    def __post_init__(self):
        if self.train_index is None:
            self.train_index = np.arange(len(self.train_y))
        if self.train_pool is None:
            self.train_pool = len(self.train_y)
        if len(self.train_index) != len(self.train_y) or (len(self.train_index) and (
                self.train_index.min() < 0 or self.train_index.max() >= self.train_pool)):
            raise ValueError(f"train_index: {len(self.train_index)} positions in a split of {self.train_pool} "
                             f"for {len(self.train_y)} training images")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device) -> "DatasetBundle":
        """The same data with its tensors on ``device``: on a GPU the decoded uint8 images
        stay there, and ``batches`` crops, flips and normalises them there (no host copies)."""
        return replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
                       test_x=self.test_x.to(device), test_y=self.test_y.to(device))


# The validation split's draw: fixed, not the run's seed, so that no stage (a subset, a
# continued fine-tuning under another seed) trains on images another stage validated on.
VALIDATION_SEED = 0


def validation_split(bundle: DatasetBundle, fraction: float) -> tuple[DatasetBundle, DatasetBundle]:
    """(training part, validation part) of ``bundle``'s training images; the validation
    part's test split is held-out training data. The held-out images are a fixed ``fraction``
    of the source's training split (one seeded permutation of it, ``VALIDATION_SEED``): a
    subset validates on the held-out images it holds (at least one), and trains on none of
    them. Both parts keep the permutation's order (for the whole split: its first images
    are the validation part)."""
    if not 0.0 < fraction < 1.0:
        return bundle, bundle
    rank = np.empty(bundle.train_pool, dtype=np.int64)
    rank[np.random.default_rng([VALIDATION_SEED, 7]).permutation(bundle.train_pool)] = np.arange(bundle.train_pool)
    ranks = rank[bundle.train_index]
    order = np.argsort(ranks, kind="stable")
    n_val = max(1, int(np.count_nonzero(ranks < max(1, int(round(fraction * bundle.train_pool))))))
    dev = bundle.train_x.device
    val_idx, train_idx = (torch.from_numpy(part).to(dev) for part in (order[:n_val], order[n_val:]))
    train = replace(bundle, train_x=bundle.train_x[train_idx], train_y=bundle.train_y[train_idx],
                    train_index=bundle.train_index[order[n_val:]])
    val = replace(bundle, test_x=bundle.train_x[val_idx], test_y=bundle.train_y[val_idx])
    return train, val


def _cifar_norm(mean: tuple[float, ...], std: tuple[float, ...]) -> Normalisation:
    """Twice the std, so that +-2 sigma of the data maps into [-1, 1] (the Poisson rate range)."""
    return Normalisation(mean=mean, std=tuple(2 * s for s in std))


_UNIT_NORM = Normalisation(mean=(0.0,), std=(1.0,))  # stays in [0, 1]: blank background never spikes
_CIFAR10_NORM = _cifar_norm((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_NORM = _cifar_norm((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
# "folder" has none: its normalisation is measured on its own train images.
_DEFAULT_NORMS = {"digits": _UNIT_NORM, "mnist": _UNIT_NORM, "cifar10": _CIFAR10_NORM, "cifar100": _CIFAR100_NORM}



def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> DatasetBundle:
    """Load a data set by name; `seed` fixes the digits split and the subsets.

    Subsets are seeded and class-proportional, for quick CPU runs on MNIST/CIFAR.
    `image_size` resizes `folder` images (default 32); the other sets have a fixed size.
    """
    key = name.lower()
    if key not in DATASETS:
        raise DatasetError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    root_path = Path(root).expanduser() if root is not None else shared_data_root()

    if key == "digits":
        splits, source = load_digits(seed), "sklearn.datasets.load_digits"
    elif key == "mnist":
        splits, source = load_mnist(root_path)
    elif key == "cifar10":
        splits, source = load_cifar10(root_path)
    elif key == "cifar100":
        splits, source = load_cifar100(root_path)
    else:
        size = CIFAR_SIZE if image_size is None else image_size
        if size < 1:
            raise DatasetError(f"image_size must be >= 1, got {image_size}")
        splits, source = load_folder(root_path, size)

    native = splits.train_x.shape[-1]
    if key != "folder" and image_size is not None and image_size != native:
        raise DatasetError(
            f"--image-size: {key} images are {native}x{native}; --image-size applies to 'folder' only"
        )
    check_labels(splits, source)

    train_index = _subset(splits.train_y, train_subset, "train_subset", seed, 0)
    train_x, train_y = splits.train_x[train_index], splits.train_y[train_index]
    if len(np.unique(train_y)) < 2:
        which = f"--train-subset: {train_subset} images of {source}" if train_subset else f"{source}: the train split"
        raise DatasetError(f"{which} hold(s) one class only; a classifier needs at least 2")
    test_index = _subset(splits.test_y, test_subset, "test_subset", seed, 1)
    test_x, test_y = splits.test_x[test_index], splits.test_y[test_index]
    if np.all(np.diff(test_y) >= 0):
        # A class-sorted test split (image-folder layouts: CIFAR's JPEG archive) is put in a
        # seeded order once, so that any prefix of it (hwsim's first 1,500 images, an
        # evaluation cut short by a time budget) samples every class.
        order = np.random.default_rng([seed, 2]).permutation(len(test_y))
        test_x, test_y = test_x[order], test_y[order]
    normalisation = _DEFAULT_NORMS.get(key) or _channel_stats(splits.train_x)
    return DatasetBundle(
        name=key,
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        class_names=list(splits.class_names),
        normalisation=normalisation,
        augment=key in ("cifar10", "cifar100"),
        source=source,
        train_index=train_index,
        train_pool=len(splits.train_y),
    )


def load_recorded(ref: DataRef, normalisation: Normalisation, root: str | os.PathLike | None = None, *,
                  train_subset: int | None = None, test_subset: int | None = None) -> DatasetBundle:
    """The data set a checkpoint or core graph records: same split seed, recorded normalisation.

    ``root`` overrides the recorded folder (then the default folder is not tried).
    """
    bundle = load_dataset(ref.dataset, root or ref.root, train_subset=train_subset, test_subset=test_subset,
                          seed=ref.seed, image_size=ref.image_size)
    return replace(bundle, normalisation=normalisation)


def check_fits(bundle: DatasetBundle, class_names, input_shape, owner: str) -> DatasetBundle:
    """``bundle`` is data of the kind ``owner`` (a checkpoint, a graph) was made for: the
    same classes and image shape; another data set under ``--data-root`` is an error."""
    if list(bundle.class_names) != list(class_names) or bundle.input_shape != tuple(input_shape):
        raise DatasetError(f"{bundle.source}: {bundle.num_classes} classes of {bundle.input_shape} images, but "
                           f"{owner} was trained on {len(class_names)} classes of {tuple(input_shape)} images "
                           "(another data set under --data-root?)")
    return bundle


def data_of(ckpt: Checkpoint, root: str | None = None, train_subset: int | None = None,
            test_subset: int | None = None) -> DatasetBundle:
    """The checkpoint's own data set, split and normalisation; a data set of other classes
    or image size than the checkpoint's (another ``--data-root``) is an error."""
    bundle = load_recorded(ckpt.data_ref, ckpt.normalisation, root, train_subset=train_subset,
                           test_subset=test_subset)
    return check_fits(bundle, ckpt.data["class_names"], ckpt.arch.input_shape, "the checkpoint")


def data_record(bundle: DatasetBundle, seed: int) -> dict:
    """What a checkpoint records of its data: enough to reload the same split and normalisation."""
    return {"dataset": bundle.name, "data_root": bundle.source, "seed": int(seed),
            "image_size": bundle.input_shape[-1] if bundle.name == "folder" else None,
            "normalisation": bundle.normalisation.to_dict(), "class_names": list(bundle.class_names),
            "input_shape": list(bundle.input_shape)}


def batches(
    bundle: DatasetBundle,
    split: str,
    batch_size: int,
    *,
    shuffle: bool,
    augment: bool | None = None,
    seed: int = 0,
    normalisation: Normalisation | None = None,
    epoch: int = 0,
    cutout: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (normalised float32 x (B, C, H, W), int64 y); the last batch may be smaller.

    Order and augmentation depend only on (seed, epoch, split), never on global RNG state,
    so runs are reproducible. augment=None means bundle.augment for "train", off for "test".
    Augmentation (random crop with zero padding 4, horizontal flip p=0.5) acts on the raw
    pixels, so padding is a black pixel whatever the normalisation. Batches live where the
    bundle's tensors do (``DatasetBundle.to``); the random draws are made on the host, so a
    GPU-resident bundle yields the same batches as a CPU one. ``cutout`` > 0: Cutout (DeVries
    and Taylor 2017) on the training split unless ``augment`` is False, after the crop and flip
    (``_cutout``), from its own random stream: the crops and flips are the same with it and without.
    """
    x, y = _split_tensors(bundle, split)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    norm = normalisation or bundle.normalisation
    if norm.channels != x.shape[1]:
        raise ValueError(f"normalisation has {norm.channels} channels, {bundle.name} images have {x.shape[1]}")
    do_augment = (bundle.augment and split == "train") if augment is None else augment
    check_cutout(bundle, cutout)
    cut = cutout > 0 and split == "train" and augment is not False
    rng = np.random.default_rng([seed, epoch, SPLITS.index(split)])
    cut_rng = np.random.default_rng([seed, epoch, SPLITS.index(split), 1])    # its own: the crops stay the same
    order = torch.from_numpy(rng.permutation(len(y))) if shuffle else torch.arange(len(y))
    order = order.to(x.device)

    def generate() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            xb = norm.apply(_augment(x[idx], rng) if do_augment else x[idx])
            yield (_cutout(xb, cutout, cut_rng) if cut else xb), y[idx]

    return generate()


def num_batches(bundle: DatasetBundle, split: str, batch_size: int) -> int:
    """Batches per pass over a split, counting the last partial one."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return math.ceil(len(_split_tensors(bundle, split)[1]) / batch_size)


def _split_tensors(bundle: DatasetBundle, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return (bundle.train_x, bundle.train_y) if split == "train" else (bundle.test_x, bundle.test_y)


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random crop of the zero-padded image (pad 4) and horizontal flip with p = 0.5, per sample."""
    b, _, h, w = x.shape
    padded = F.pad(x, (_CROP_PAD,) * 4)
    dev = x.device
    dy, dx = torch.from_numpy(rng.integers(0, 2 * _CROP_PAD + 1, size=(2, b))).to(dev)
    rows = dy[:, None] + torch.arange(h, device=dev)
    cols = dx[:, None] + torch.arange(w, device=dev)
    # Advanced indices on dims 0, 2, 3 around a slice put the channel last: (B, H, W, C).
    crops = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    crops = crops.permute(0, 3, 1, 2)
    flip = torch.from_numpy(rng.random(b) < 0.5).to(dev)[:, None, None, None]
    return torch.where(flip, crops.flip(3), crops).contiguous()


def check_cutout(bundle: DatasetBundle, side: int) -> None:
    """Raise ValueError for a Cutout side that is negative or covers the whole image."""
    h, w = bundle.input_shape[1:]
    if not 0 <= side < min(h, w):
        raise ValueError(f"cutout {side}: the square's side must be in 0..{min(h, w) - 1} for {bundle.name}'s "
                         f"{h}x{w} images (0: off)")


def _cutout(x: torch.Tensor, side: int, rng: np.random.Generator) -> torch.Tensor:
    """Each normalised image of ``x`` with a ``side`` x ``side`` square set to 0 (CIFAR's mean
    colour; the blank background of digits and MNIST), which the input encodings turn into no
    spikes, centred on a uniform pixel and clipped at the border as in Cutout (DeVries and
    Taylor 2017): the net cannot lean on any one patch of the image."""
    b, _, h, w = x.shape
    dev = x.device
    starts = [torch.from_numpy(rng.integers(0, n, size=b) - side // 2).to(dev)[:, None] for n in (h, w)]
    inside_y, inside_x = ((torch.arange(n, device=dev) >= s) & (torch.arange(n, device=dev) < s + side)
                          for n, s in zip((h, w), starts))
    square = inside_y[:, :, None] & inside_x[:, None, :]
    return x.masked_fill(square[:, None], 0.0)


def _subset(y: np.ndarray, k: int | None, what: str, seed: int, stream: int) -> np.ndarray:
    """The positions of a seeded class-proportional subset of k images (all of them without k)."""
    if k is not None and k < 1:
        raise DatasetError(f"--{what.replace('_', '-')}: must be >= 1, got {k}")
    if k is None or k >= len(y):
        return np.arange(len(y))
    return _stratified_indices(y, k, np.random.default_rng([seed, stream]))


def _stratified_indices(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Seeded subset of k indices with class proportions close to those of y (sorted)."""
    perm = rng.permutation(len(y))
    labels = y[perm]
    counts = np.bincount(labels)
    starts = np.cumsum(counts) - counts
    by_class = np.argsort(labels, kind="stable")
    rank = np.empty(len(y), dtype=np.int64)
    rank[by_class] = np.arange(len(y)) - starts[labels[by_class]]
    # Taking the lowest within-class quantiles first keeps every class at its share of k.
    chosen = perm[np.argsort(rank / counts[labels], kind="stable")[:k]]
    return np.sort(chosen)


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> Normalisation:
    """Per-channel mean and 2x std of pixel/255, in chunks so large sets fit in memory."""
    total = np.zeros(x.shape[1])
    total_sq = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float64) / 255
        total += part.sum(axis=(0, 2, 3))
        total_sq += np.square(part).sum(axis=(0, 2, 3))
    count = len(x) * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0))
    # A constant channel (std 0) would divide by zero; 1/255 is one grey level.
    return _cifar_norm(tuple(mean.tolist()), tuple(np.maximum(std, 1 / 255).tolist()))


# ---------------------------------------------------------------- digits
