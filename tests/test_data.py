"""data: MNIST as in-memory tensors, the data root rule, and the offline error."""
import gzip
from pathlib import Path

import pytest
import torch

from lab_utils import data
from lab_utils.data import DataNotFoundError, data_root, load_mnist, read_idx, subset


def test_test_split_shapes_and_range(mnist_test):
    x, y = mnist_test
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # MNIST's first test labels
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(x.mean().item() - 0.1325) < 1e-3  # MNIST's known test-set pixel mean


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("CVAE_LAB_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("CVAE_LAB_DATA")
    assert data_root() == data.REPO_ROOT / "data"


def test_missing_files_offline_name_files_folder_and_env(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("test", root=tmp_path, download=False)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert "CVAE_LAB_DATA" in msg


def test_failed_download_gives_the_same_clear_error(tmp_path, monkeypatch):
    import torchvision

    def no_network(self, *a, **k):
        raise OSError("no route to host")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_network)
    with pytest.raises(DataNotFoundError, match="download failed: no route to host"):
        load_mnist("test", root=tmp_path, download=True)


def test_bad_split_and_dataset():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_mnist("validation")
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_mnist("test", dataset="cifar")


def test_read_idx_matches_torchvision(mnist_test, tmp_path):
    raw = data_root() / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels = read_idx(raw)
    assert torch.equal(labels.long(), mnist_test[1])
    truncated = tmp_path / "bad-idx1-ubyte"
    truncated.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated)


def test_subset_is_reproducible(mnist_test):
    x, y = mnist_test
    a = subset(x, y, 100, seed=1)
    b = subset(x, y, 100, seed=1)
    assert a[0].shape == (100, 1, 28, 28) and torch.equal(a[1], b[1])


def test_fashion_mnist(fashion_mnist_test):
    x, y = fashion_mnist_test
    assert x.shape == (10_000, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [1000] * 10
    assert data.class_names("fashion-mnist")[9] == "Ankle boot"


def test_fashion_mnist_from_debian_and_its_absence(fashion_mnist_test, tmp_path, monkeypatch):
    if not data.DEBIAN_FASHION_DIR.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    x, y = load_mnist("test", root=tmp_path, dataset="fashion-mnist", download=False)
    assert torch.equal(y, fashion_mnist_test[1])
    monkeypatch.setenv(data.DEBIAN_FASHION_ENV, str(tmp_path / "hidden"))  # hide the package
    assert data.missing_files("fashion-mnist", root=tmp_path) == list(data.RAW_FILES)
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_mnist("test", root=tmp_path, dataset="fashion-mnist", download=False)


def test_gzipped_files_load_offline_and_count_as_present(mnist_test, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(raw / f"{name}.gz", "wb") as f:
            f.write((data_root() / "MNIST" / "raw" / name).read_bytes())
    assert data.missing_files(root=tmp_path) == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    x, y = load_mnist("test", root=tmp_path, download=False)
    assert torch.equal(x, mnist_test[0]) and torch.equal(y, mnist_test[1])


def test_failed_download_error_is_not_chained_to_torchvisions(tmp_path, monkeypatch):
    import torchvision

    def no_network(self, *a, **k):
        Path(self.raw_folder).mkdir(parents=True)  # as torchvision does before downloading
        raise RuntimeError("Error downloading x.gz:\nTried mirror A, got:\n<urlopen error no route>\n")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_network)
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("test", root=tmp_path, download=True)
    err = info.value
    # No "Dataset not found. You can use download=True" above our message.
    assert err.__cause__ is None and err.__suppress_context__
    assert err.download_error == "Error downloading x.gz: <urlopen error no route>"
    assert "\n" not in str(err) and "CVAE_LAB_DATA" in str(err)
    assert not (tmp_path / "MNIST").exists(), "a failed download leaves no empty folder behind"
