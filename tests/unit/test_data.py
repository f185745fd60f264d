"""Data: the digits split, deterministic batching, and the tfds path (mock data only)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cooptim import data
from cooptim.config import DataConfig


def test_digits_split_is_deterministic_stratified_and_disjoint():
    a, b = data.load_digits(), data.load_digits()
    assert len(a.train) + len(a.test) == 1797
    assert len(a.test) == 450
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    np.testing.assert_array_equal(a.test.images, b.test.images)
    counts = np.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46  # stratified: ~45 per class
    train_rows = {img.tobytes() for img in a.train.images}
    overlap = sum(img.tobytes() in train_rows for img in a.test.images)
    assert overlap <= 5  # the data set itself holds a few duplicate images, nothing more
    x, y = a.train.get(np.arange(len(a.train)))
    assert x.shape == (len(a.train), 8, 8, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-3


def test_train_stream_depends_only_on_seed_and_step():
    ds = data.load_digits()
    s1, s2 = data.TrainStream(ds.train, 64, seed=3), data.TrainStream(ds.train, 64, seed=3)
    for step in (0, 5, 40, 17, 0):  # out of order, across epochs
        np.testing.assert_array_equal(s1.batch(step)[1], s2.batch(step)[1])
    first_epoch = np.concatenate([s1.batch(i)[1] for i in range(s1.steps_per_epoch)])
    assert len(first_epoch) == s1.steps_per_epoch * 64
    assert not np.array_equal(s1.batch(0)[1], s1.batch(s1.steps_per_epoch)[1])  # reshuffled
    other = data.TrainStream(ds.train, 64, seed=4)
    assert not np.array_equal(other.batch(0)[1], s1.batch(0)[1])


def test_batch_larger_than_data_is_an_error():
    with pytest.raises(data.DataError, match="batch_size=5000 is larger than the training set"):
        data.TrainStream(data.load_digits().train, 5000, seed=0)


def test_eval_batches_cover_every_example_once():
    ds = data.load_digits()
    labels = np.concatenate([y for _, y in data.eval_batches(ds.test, 128)])
    np.testing.assert_array_equal(labels, ds.test.labels)


def test_augment_crops_and_flips_but_keeps_shape():
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)
    y = data.augment(x, np.random.default_rng(1))
    assert y.shape == x.shape and not np.array_equal(x, y)


def test_a_process_share_of_a_batch_is_those_rows_of_the_whole_batch_augmented_alike():
    """Data-parallel training over several processes: each reads only its rows of the global
    batch, and those rows equal the same rows read whole (augmentation included)."""
    x = np.random.default_rng(0).normal(size=(40, 8, 8, 3)).astype(np.float32)
    source = data.ArraySource(x, np.arange(40) % 10, np.float32(0), np.float32(1))
    stream = data.TrainStream(source, 8, seed=2, augment=True)
    for step in (0, 7):
        whole_x, whole_y = stream.batch(step)
        halves = [stream.batch(step, slice(0, 4)), stream.batch(step, slice(4, 8))]
        np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), whole_x)
        np.testing.assert_array_equal(np.concatenate([h[1] for h in halves]), whole_y)


def test_cifar10_through_tfds_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load(DataConfig(name="cifar10", batch_size=4))
    assert ds.image_shape == (32, 32, 3) and ds.num_classes == 10
    x, y = ds.train.get(np.arange(4))
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert ((0 <= y) & (y < 10)).all()


def test_imagenet_through_tfds_mock_data_resizes_random_sizes():
    with tfds.testing.mock_data(num_examples=3):
        ds = data.load(DataConfig(name="imagenet2012", image_size=32))
        x, y = ds.test.get(np.arange(3))
    assert x.shape == (3, 32, 32, 3) and ds.num_classes == 1000


def test_missing_tfds_data_says_how_to_prepare_it(tmp_path):
    with pytest.raises(data.DataError, match="tfds build cifar10 --file_format=array_record"):
        data.load(DataConfig(name="cifar10", data_dir=str(tmp_path)))
