"""convnet_data: data sets for convnet.

- IDX files (`read_idx`, `write_idx`), the format of MNIST and Fashion-MNIST;
- `load_mnist()` (the copy bundled in data/mnist/, checksum-verified),
  `load_fashion_mnist(root)`, `load_cifar10(root)` (the binary version), each returning
  (train, test) `Dataset`s;
- `Dataset(images, labels)`: uint8 (N, C, H, W) images, `split`, `subset`, and
  `batches(...)`, which prepares float32 batches ahead in background threads;
- `convnet_data.augment`: random shifts, rotations and elastic distortion on batches;
- `download(url, checksum, cache_dir)`: a checked download into a cache.
"""

from . import augment
from .dataset import Dataset
from .datasets import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    DataNotFoundError,
    find_mnist_dir,
    find_mnist_file,
    load_cifar10,
    load_fashion_mnist,
    load_idx_pair,
    load_mnist,
    load_mnist_gz,
    read_cifar10_batch,
)
from .download import ChecksumError, DownloadError, download, file_digest
from .idx import IDXFormatError, read_idx, write_idx

__version__ = "0.1.0"

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "ChecksumError",
    "DataNotFoundError",
    "Dataset",
    "DownloadError",
    "IDXFormatError",
    "augment",
    "download",
    "file_digest",
    "find_mnist_dir",
    "find_mnist_file",
    "load_cifar10",
    "load_fashion_mnist",
    "load_idx_pair",
    "load_mnist",
    "load_mnist_gz",
    "read_cifar10_batch",
    "read_idx",
    "write_idx",
]
