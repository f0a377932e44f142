import gzip
import shutil

import numpy as np
import pytest
import torch

from ignite_lenet.mnist.idx import MNIST_FILES, DatasetError, ensure_mnist, parse_idx, raw_dir, read_mnist
from ignite_lenet.mnist.resize import to_model_input
from ignite_lenet.training.data import InMemoryLoader, Split, load_data
from ignite_lenet.training.notebook_baseline import notebook_transform


def _idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def test_parse_idx_roundtrip_and_errors():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    blob = _idx_bytes(array)
    np.testing.assert_array_equal(parse_idx(blob), array)
    with pytest.raises(DatasetError, match="truncated"):
        parse_idx(blob[:-1])
    with pytest.raises(DatasetError, match="trailing"):
        parse_idx(blob + b"\0")
    with pytest.raises(DatasetError, match="magic"):
        parse_idx(b"\x89PNG" + blob[4:])


def _copy_mnist(src, dst, compress=False):
    """A copy of the MNIST files; with ``compress`` the (small) test files as .gz, as downloads leave them."""
    raw = raw_dir(dst)
    raw.mkdir(parents=True)
    for split, names in MNIST_FILES.items():
        for name in names:
            source = raw_dir(src) / name
            if compress and split == "test":
                with open(source, "rb") as f, gzip.open(raw / f"{name}.gz", "wb", compresslevel=1) as g:
                    shutil.copyfileobj(f, g)
            else:
                shutil.copy(source, raw / name)
    return raw


def test_load_mnist_real_shapes_and_labels(mnist_dir):
    images, labels = read_mnist(mnist_dir, "test", download=False)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_gzipped_files_load_identically(mnist_dir, tmp_path):
    _copy_mnist(mnist_dir, tmp_path, compress=True)
    images, labels = read_mnist(tmp_path, "test", download=False)
    ref_images, ref_labels = read_mnist(mnist_dir, "test", download=False)
    assert np.array_equal(images, ref_images) and np.array_equal(labels, ref_labels)


def test_missing_files_name_the_files_and_the_place(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_mnist(tmp_path, "train", download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "t10k" not in message  # only the split asked for is needed (export verifies on the test split alone)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        ensure_mnist(tmp_path, download=False)  # training's check still wants all four
    assert str(raw_dir(tmp_path)) in message and "\n" not in message


def test_failed_download_says_so_and_where_to_put_the_files(tmp_path, monkeypatch):
    from torchvision import datasets

    # nothing listens on port 9 of this machine: the download fails at once, as it does offline
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    target = tmp_path / "new" / "data"
    with pytest.raises(FileNotFoundError, match="download failed") as info:
        read_mnist(target, "train", download=True)
    assert str(raw_dir(target)) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no empty data/MNIST/raw (nor data/, nor new/) left behind
    (tmp_path / "kept").mkdir()  # a directory that existed before stays, empty or not
    with pytest.raises(FileNotFoundError, match="download failed"):
        ensure_mnist(tmp_path / "kept", download=True)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []


def test_mnist_files_needs_no_torch(mnist_dir):
    import subprocess

    from helpers import PYTHON, python_env

    script = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
              "from ignite_lenet.mnist.idx import read_mnist\n"
              f"images, labels = read_mnist(r'{mnist_dir}', 'test', download=False)\n"
              "print(images.shape, labels[:5].tolist())")
    done = subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(10000, 28, 28) [7, 2, 1, 0, 4]"


def test_truncated_and_corrupt_files_are_reported(mnist_dir, tmp_path):
    raw = _copy_mnist(mnist_dir, tmp_path)
    target = raw / "t10k-images-idx3-ubyte"
    blob = target.read_bytes()
    target.write_bytes(blob[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        read_mnist(tmp_path, "test", download=False)
    flipped = bytearray(blob)
    flipped[5000] ^= 0xFF
    target.write_bytes(bytes(flipped))
    with pytest.raises(DatasetError, match="checksum"):
        read_mnist(tmp_path, "test", download=False)


def test_preprocessing_matches_the_notebooks_torchvision_pipeline(mnist_dir):
    from torchvision import datasets

    reference = datasets.MNIST(str(mnist_dir), train=False, download=False, transform=notebook_transform())
    images, _ = read_mnist(mnist_dir, "test", download=False)
    ours = torch.from_numpy(to_model_input(images[:500]))
    theirs = torch.stack([reference[i][0] for i in range(500)])
    assert ours.shape == theirs.shape == (500, 1, 32, 32) and ours.dtype == torch.float32
    assert (ours - theirs).abs().max().item() <= 1 / 255
    assert 0.0 <= ours.min().item() and ours.max().item() <= 1.0


def test_model_input_accepts_floats_and_channel_dim_and_rejects_bad_shapes():
    x = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    out = to_model_input(x)
    assert out.shape == (3, 1, 32, 32)
    np.testing.assert_allclose(to_model_input(x[:, None]), out)
    assert to_model_input(np.zeros((2, 1, 32, 32), np.float32)).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="expected images of shape"):
        to_model_input(np.zeros((2, 3, 28, 28), np.float32))


def test_holdout_split_is_seeded_disjoint_and_sized(mnist_data):
    assert len(mnist_data.train) == 55000 and len(mnist_data.val) == 5000 and len(mnist_data.test) == 10000
    assert len(mnist_data.train_eval) == 5000
    # the validation images are training images that the training split does not contain
    val_rows = {row.numpy().tobytes() for row in mnist_data.val.images[:200].flatten(1)}
    train_rows = {row.numpy().tobytes() for row in mnist_data.train.images[:5000].flatten(1)}
    assert not val_rows & train_rows
    assert torch.bincount(mnist_data.val.labels).min().item() > 400  # all classes present


def test_val_source_test_is_the_notebook_setup(mnist_dir):
    data = load_data(mnist_dir, download=False, val_source="test", train_eval_size=0)
    assert len(data.train) == 60000 and data.val is data.test and data.train_eval is data.train


def _toy_split(n=103):
    return Split(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.arange(n))


def test_loader_shuffles_per_epoch_deterministically_and_covers_everything():
    loader = InMemoryLoader(_toy_split(), batch_size=10, shuffle=True, seed=3)
    assert len(loader) == 11
    loader.set_epoch(1)
    first = torch.cat([y for _, y in loader])
    again = torch.cat([y for _, y in loader])
    loader.set_epoch(2)
    second = torch.cat([y for _, y in loader])
    assert torch.equal(first, again) and not torch.equal(first, second)
    assert sorted(first.tolist()) == list(range(103)) == sorted(second.tolist())
    for x, y in loader:  # images travel with their labels
        assert torch.equal(x.flatten().long(), y)


def test_loader_max_batches_and_sequential_views():
    split = _toy_split()
    loader = InMemoryLoader(split, batch_size=10, max_batches=3)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert batches[0][1].tolist() == list(range(10))
    assert batches[0][0].data_ptr() == split.images.data_ptr()  # a view, not a copy


@pytest.mark.parametrize("pad", [True, False])
def test_loader_shards_are_disjoint_and_complete(pad):
    split = _toy_split(103)
    shards = []
    for rank in range(2):
        loader = InMemoryLoader(split, batch_size=8, shuffle=True, seed=0, rank=rank, world_size=2, pad=pad)
        loader.set_epoch(5)
        shards.append(torch.cat([y for _, y in loader]).tolist())
    if pad:  # equal lengths for lock-step training; only the one padding sample repeats
        assert len(shards[0]) == len(shards[1]) == 52
        assert len(set(shards[0]) | set(shards[1])) == 103
    else:
        assert set(shards[0]).isdisjoint(shards[1]) and sorted(shards[0] + shards[1]) == list(range(103))
