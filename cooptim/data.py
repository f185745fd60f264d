"""Data sets and batching.

`load(cfg)` returns a `Dataset` with a train and a test `Source`: random-access collections that
return normalized float32 NHWC images and int32 labels for a list of indices.

- `digits`: scikit-learn's 1,797 real 8x8 handwritten digits, shipped inside scikit-learn, so it
  needs no download. It is split once, deterministically and stratified by class, into train/test
  (the split does not depend on the experiment seed, so every run is scored on the same images).
- `cifar10`, `imagenet2012`: read with `tfds.data_source` from the user's `data_dir`, where they
  have been prepared once in array_record format. TensorFlow is not needed to read them.

`TrainStream` serves the training batches of any step: the order within an epoch is a permutation
seeded by (seed, epoch), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Protocol, Sequence

import numpy as np

from cooptim.config import DataConfig
from cooptim.errors import UserError


class DataError(UserError, RuntimeError):
    """A data set that cannot be loaded, with what to do about it."""


class Source(Protocol):
    def __len__(self) -> int: ...

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (images float32 (B, H, W, C), labels int32 (B,))."""
        ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """An in-memory source; images are normalized on the way out as (x - mean) / std."""

    images: np.ndarray  # (N, H, W, C), uint8 or float32
    labels: np.ndarray  # (N,) int
    mean: np.ndarray  # broadcastable to (C,)
    std: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (self.images[indices].astype(np.float32) - self.mean) / self.std
        return x.astype(np.float32), self.labels[indices].astype(np.int32)


@dataclasses.dataclass(frozen=True)
class ImageRecordSource:
    """A tfds data source of variable-sized images, resized and center-cropped on access."""

    records: Sequence[dict]
    size: int
    mean: np.ndarray
    std: np.ndarray

    def __len__(self) -> int:
        return len(self.records)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        images, labels = [], []
        for record in (self.records[int(i)] for i in indices):
            img = Image.fromarray(record["image"])
            scale = self.size * 1.14 / min(img.size)  # resize the short side to 256 for 224
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
            left, top = (img.width - self.size) // 2, (img.height - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
            images.append(np.asarray(img, dtype=np.float32) / 255.0)
            labels.append(record["label"])
        x = (np.stack(images) - self.mean) / self.std
        return x.astype(np.float32), np.asarray(labels, np.int32)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Source
    test: Source
    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, C)


_CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32) * 255
_CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], np.float32) * 255
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_digits(test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's 8x8 digits, gray levels 0..16, split stratified with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    images = digits.images.astype(np.float32)[..., None]  # (1797, 8, 8, 1)
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, random_state=0, stratify=labels
    )
    mean, std = np.float32(x_tr.mean()), np.float32(x_tr.std())
    return Dataset(
        name="digits",
        train=ArraySource(x_tr, y_tr, mean, std),
        test=ArraySource(x_te, y_te, mean, std),
        num_classes=10,
        image_shape=(8, 8, 1),
    )


def _tfds_source(name: str, split: str, data_dir: str | None):
    import os

    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(data_dir) if data_dir else None
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not there / wrong format"
        where = data_dir or "~/tensorflow_datasets"
        raise DataError(
            f"data set {name!r} (split {split!r}) could not be read from {where}: {e}\n"
            f"Prepare it once in array_record format (this step needs TensorFlow):\n"
            f"  tfds build {name} --file_format=array_record --data_dir {where}\n"
            f"and set data.data_dir in the config."
        ) from None


def load_cifar10(data_dir: str | None) -> Dataset:
    """CIFAR-10 through tfds, read fully into memory (50,000 x 32 x 32 x 3 uint8 = 150 MB)."""

    def read(split):
        records = _tfds_source("cifar10", split, data_dir)
        items = [records[i] for i in range(len(records))]
        images = np.stack([r["image"] for r in items]).astype(np.uint8)
        labels = np.asarray([r["label"] for r in items], np.int32)
        return ArraySource(images, labels, _CIFAR_MEAN, _CIFAR_STD)

    return Dataset("cifar10", read("train"), read("test"), 10, (32, 32, 3))


def load_imagenet(data_dir: str | None, size: int) -> Dataset:
    """ImageNet-1k through tfds; images are decoded and resized lazily, batch by batch."""

    def source(split):
        return ImageRecordSource(
            _tfds_source("imagenet2012", split, data_dir), size, _IMAGENET_MEAN, _IMAGENET_STD
        )

    return Dataset("imagenet2012", source("train"), source("validation"), 1000, (size, size, 3))


def load(cfg: DataConfig) -> Dataset:
    if cfg.name == "digits":
        return load_digits(cfg.test_fraction)
    if cfg.name == "cifar10":
        return load_cifar10(cfg.data_dir)
    if cfg.name == "imagenet2012":
        return load_imagenet(cfg.data_dir, cfg.image_size)
    raise DataError(f"unknown data set {cfg.name!r}")


def augment(images: np.ndarray, rng: np.random.Generator, pad: int = 4, batch_size: int | None = None,
            first_row: int = 0) -> np.ndarray:
    """Random crop after zero padding by `pad` pixels, and random horizontal flip (CIFAR recipe).

    `images` may be rows `first_row...` of a batch of `batch_size`: the random draws are made for
    the whole batch and the rows' own applied, so an image is augmented alike whichever process of
    a data-parallel run reads it."""
    b, h, w, _ = images.shape
    n, rows = batch_size or b, slice(first_row, first_row + b)
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))[:, rows]
    flip = (rng.random(n) < 0.5)[rows]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.empty_like(images)
    for i in range(b):
        crop = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


class TrainStream:
    """Training batches by step: deterministic in (seed, step), so resuming replays exactly.

    Each epoch is a fresh permutation seeded by (seed, epoch); the last partial batch of an epoch
    is dropped so that every step sees `batch_size` examples.
    """

    def __init__(self, source: Source, batch_size: int, seed: int, augment: bool = False):
        if batch_size > len(source):
            raise DataError(
                f"data.batch_size={batch_size} is larger than the training set ({len(source)})"
            )
        self.source, self.batch_size, self.seed, self.augment = source, batch_size, seed, augment
        self.steps_per_epoch = len(source) // batch_size
        self._epoch, self._perm = -1, None

    def batch(self, step: int, rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """The batch of `step`, or only its `rows` (a process's share in data-parallel training:
        only those images are read)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng((self.seed, epoch)).permutation(len(self.source))
        indices = self._perm[i * self.batch_size : (i + 1) * self.batch_size]
        x, y = self.source.get(indices[rows])
        if self.augment:
            x = augment(x, np.random.default_rng((self.seed, epoch, i, 1)), batch_size=self.batch_size,
                        first_row=rows.indices(self.batch_size)[0])
        return x, y


def eval_batches(source: Source, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every example once, in order, the last batch possibly smaller."""
    for start in range(0, len(source), batch_size):
        yield source.get(np.arange(start, min(start + batch_size, len(source))))
