"""MNIST (and Fashion-MNIST) as in-memory tensors.

The whole dataset fits in memory (60,000 x 28 x 28 bytes = 47 MB), so it is
loaded once into a float tensor in [0, 1] and mini-batches are sliced from it.
That is about twice as fast on a laptop CPU as a ``DataLoader`` that converts
every sample with ``ToTensor()`` (see ``benchmarks/train_speed.py``).
Taught in ``00_setup_and_data.ipynb``.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import torch
import torchvision

DATA_ENV = "CVAE_LAB_DATA"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO_ROOT / "data"
# Where Debian's package ``dataset-fashion-mnist`` puts its (gzipped) files;
# ``$CVAE_LAB_DEBIAN_FASHION`` overrides it (an empty folder hides the package).
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_FASHION_ENV = "CVAE_LAB_DEBIAN_FASHION"

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
RAW_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
_DATASETS = {
    "mnist": (torchvision.datasets.MNIST, "MNIST"),
    "fashion-mnist": (torchvision.datasets.FashionMNIST, "FashionMNIST"),
}


class DataNotFoundError(FileNotFoundError):
    """The dataset files are not where we looked and could not be downloaded.

    ``download_error`` is a one-line summary of why the download failed (``None``
    when no download was tried).
    """

    download_error: str | None = None


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the datasets: ``root`` if given, else ``$CVAE_LAB_DATA``,
    else ``<repo>/data``.

    One rule for every notebook, test and script, so pointing the whole series at
    an offline copy is one environment variable.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT


def class_names(dataset: str = "mnist") -> tuple[str, ...]:
    """Human-readable names of the 10 classes of ``dataset``."""
    return FASHION_CLASSES if _dataset_key(dataset) == "fashion-mnist" else MNIST_CLASSES


def _dataset_key(dataset: str) -> str:
    key = dataset.lower().replace("_", "-")
    key = {"fashion": "fashion-mnist", "fashionmnist": "fashion-mnist"}.get(key, key)
    if key not in _DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: use 'mnist' or 'fashion-mnist'")
    return key


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file (the format of MNIST's files), gzipped or not, as uint8.

    Images come back as (N, 28, 28), labels as (N,).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = offset + int(torch.tensor(dims).prod())
    if len(raw) != expected:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, expected {expected}")
    data = torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8)
    return data.view(*dims)  # (N*28*28,) -> (N, 28, 28) or (N,)


def debian_fashion_dir() -> Path:
    """The folder of Debian's ``dataset-fashion-mnist`` files (``$CVAE_LAB_DEBIAN_FASHION``
    if set, else ``/usr/share/datasets/fashion-mnist``)."""
    env = os.environ.get(DEBIAN_FASHION_ENV, "").strip()
    return Path(env).expanduser() if env else DEBIAN_FASHION_DIR


def _debian_fashion(train: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Fashion-MNIST from Debian's package, if it is installed."""
    return _read_raw(debian_fashion_dir(), train)


def _read_raw(folder: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A split's two raw files read from ``folder`` (each gzipped or not), if both
    are there: torchvision itself wants them unpacked."""
    prefix = "train" if train else "t10k"
    found = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{prefix}-{kind}-ubyte"
        path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
        if path is None:
            return None
        found.append(read_idx(path))
    return found[0], found[1]


def missing_files(
    dataset: str = "mnist", root: str | os.PathLike | None = None
) -> list[str]:
    """The raw files of ``dataset`` not found (gzipped or not) under ``data_root(root)``;
    ``[]`` when all four are there (for Fashion-MNIST: or in Debian's package).

    A cheap check that reads nothing: the tests use it to stop early, with one
    message, when MNIST is missing.
    """
    key = _dataset_key(dataset)
    folder = data_root(root) / _DATASETS[key][1] / "raw"

    def found(name: str, where: Path) -> bool:
        return (where / name).is_file() or (where / f"{name}.gz").is_file()

    missing = [name for name in RAW_FILES if not found(name, folder)]
    if missing and key == "fashion-mnist":
        debian = debian_fashion_dir()
        if all(found(name, debian) for name in RAW_FILES):
            return []
    return missing


def _summary(exc: Exception) -> str:
    """One line for a failed download: torchvision's message is several lines
    (one per mirror), whose first and last say what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"


def _not_found(key: str, folder: Path, cause: Exception | None) -> DataNotFoundError:
    files = ", ".join(RAW_FILES)
    hint = (
        " or install Debian's package (apt-get install dataset-fashion-mnist)"
        if key == "fashion-mnist" else ""
    )
    if cause is not None:
        why, last = f" (download failed: {_summary(cause)})", ""
    else:
        why, last = "", ", or allow the download with download=True on a machine with internet access"
    error = DataNotFoundError(
        f"{key} not found: expected the files {files} in {folder}{why}. "
        f"Put them there, set ${DATA_ENV} to the folder that holds "
        f"{folder.parent.name}/raw/, pass root=...{hint}{last}."
    )
    error.download_error = _summary(cause) if cause is not None else None
    return error


def load_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    dataset: str = "mnist",
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole split as ``(x, y)``: images (N, 1, 28, 28) float32 in [0, 1]
    and labels (N,) int64.

    Files are read through ``torchvision.datasets.MNIST`` (or ``FashionMNIST``)
    from ``data_root(root)``; they are downloaded there if missing and
    ``download`` is true. Fashion-MNIST is also found in Debian's
    ``dataset-fashion-mnist`` package. Missing files raise
    :class:`DataNotFoundError`, whose message names the files, the folder and
    ``$CVAE_LAB_DATA``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    key = _dataset_key(dataset)
    cls, folder_name = _DATASETS[key]
    root_path = data_root(root)
    train = split == "train"
    raw_folder = root_path / folder_name / "raw"
    try:
        ds = cls(str(root_path), train=train, download=False)
        images, labels = ds.data, ds.targets
    except RuntimeError:
        found = _read_raw(raw_folder, train)
        if found is None and key == "fashion-mnist":
            found = _debian_fashion(train)
        if found is not None:
            images, labels = found
        elif not download:
            raise _not_found(key, raw_folder, None) from None
        else:
            made = [d for d in (root_path, root_path / folder_name, raw_folder) if not d.exists()]
            try:
                ds = cls(str(root_path), train=train, download=True)
            except Exception as exc:  # no network, read-only folder, ...
                for d in reversed(made):  # leave no empty folders behind
                    try:
                        d.rmdir()
                    except OSError:
                        pass
                # from None: torchvision's own "Dataset not found. You can use
                # download=True" would otherwise head the traceback; the cause
                # is summarised in the message.
                raise _not_found(key, raw_folder, exc) from None
            images, labels = ds.data, ds.targets
    x = images.unsqueeze(1).float().div_(255.0)  # (N, 28, 28) uint8 -> (N, 1, 28, 28) in [0, 1]
    y = labels.long()  # (N,)
    return x, y


def subset(
    x: torch.Tensor, y: torch.Tensor, n: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random, reproducible subset of ``n`` examples (for quick runs and tests)."""
    if n >= x.shape[0]:
        return x, y
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[:n]
    return x[idx], y[idx]
