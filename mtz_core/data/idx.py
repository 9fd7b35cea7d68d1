"""Reading MNIST's IDX files from a local folder, with checksum verification.

The project's machines cannot download anything, so MNIST must come from files a user (or the
shared data folder) already has. They may sit in one of several layouts - the original `.gz`
files side by side, or torchvision's `<root>/MNIST/raw/<name>` with or without the `.gz` - so the
loader looks in all of them. IDX is parsed here with numpy rather than through torchvision: it is
a 16-byte header and a raw array, and doing it ourselves lets us check the magic number and the
dimensions and give an error that names the file.

Every file is verified against the md5 of its *uncompressed* bytes (the same value whether it is
stored gzipped or not); the canonical MNIST values are in `MNIST_MD5`. Callers can pass their own
table (tests do, for the small files they write) or `None` to skip verification.

Parsed arrays are cached per process, keyed by path, modification time and size, because
decompressing and hashing the 60,000 training images takes about a second.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

__all__ = [
    "MNIST_FILES",
    "MNIST_MD5",
    "read_idx",
    "find_idx_file",
    "load_mnist_arrays",
    "clear_idx_cache",
]

# split part -> file name (uncompressed) as published
MNIST_FILES: Mapping[str, str] = MappingProxyType(
    {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
)

# md5 of the uncompressed files, as published with the dataset (and checked by torchvision)
MNIST_MD5: Mapping[str, str] = MappingProxyType(
    {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
)

# IDX type byte -> numpy dtype (multi-byte types are big-endian in the format)
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Header: two zero bytes, a type byte, a dimension count, then one big-endian u32 per dim."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        magic = data[:4].hex() if len(data) >= 4 else data.hex()
        raise ValueError(
            f"{path}: not an IDX file (magic number 0x{magic or 'empty'}; expected 0x0000TTDD "
            f"with type byte TT in {sorted(hex(k) for k in _IDX_DTYPES)})"
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: IDX header is truncated or declares {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX header declares shape {dims} ({expected} bytes in all) but the file has "
            f"{len(data)} bytes; the file is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


@functools.lru_cache(maxsize=16)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, str]:
    raw = Path(path).read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt gzip data ({err})") from None
    digest = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    array = _parse_idx(raw, Path(path))
    array.flags.writeable = False  # shared through the cache: nobody may modify it
    return array, digest


def clear_idx_cache() -> None:
    """Forget every parsed file (tests that rewrite a file in place do not need it: the cache
    key includes modification time and size)."""
    _read_idx_cached.cache_clear()


def read_idx(path: str | os.PathLike, *, expected_md5: str | None = None) -> np.ndarray:
    """Read one IDX file, gzipped (detected by content) or not; returns a read-only array.

    `expected_md5` is compared with the md5 of the uncompressed bytes; a mismatch is a ValueError
    naming the file and both digests.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"IDX file not found: {p}")
    st = p.stat()
    array, digest = _read_idx_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)
    if expected_md5 is not None and digest != expected_md5.lower():
        raise ValueError(
            f"{p}: md5 of the uncompressed data is {digest}, expected {expected_md5}; the file is "
            "corrupt or not the dataset it claims to be - delete it and fetch it again"
        )
    return array


def find_idx_file(root: str | os.PathLike, name: str, subdirs: tuple[str, ...]) -> Path:
    """First of `<root>/<sub>/<name>.gz` or `<root>/<sub>/<name>` for `sub` in `subdirs`."""
    base = Path(root)
    tried: list[str] = []
    for sub in subdirs:
        folder = base / sub if sub else base
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
    raise FileNotFoundError(f"{name}: not found under {base}; looked for: {', '.join(tried)}")


MNIST_SUBDIRS = ("", "MNIST/raw", "mnist")


def load_mnist_arrays(
    root: str | os.PathLike,
    *,
    checksums: Mapping[str, str] | None = MNIST_MD5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels) as uint8 arrays from `root`.

    `root` may hold the four files directly, or `MNIST/raw/` (torchvision's layout) or `mnist/`.
    `checksums` maps uncompressed file names to md5s (a name that is absent is not checked);
    `None` skips verification. Images come back as (N, H, W), labels as (N,).
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise FileNotFoundError(
            f"MNIST data_root {root_path} is not a folder; pass the folder that holds "
            "train-images-idx3-ubyte.gz etc. (or MNIST/raw/...)"
        )
    arrays: dict[str, np.ndarray] = {}
    for part, name in MNIST_FILES.items():
        path = find_idx_file(root_path, name, MNIST_SUBDIRS)
        md5 = None if checksums is None else checksums.get(name)
        arrays[part] = read_idx(path, expected_md5=md5)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"MNIST {split} files under {root_path} disagree: images {images.shape}, labels "
                f"{labels.shape}; expected (N, H, W) images and (N,) labels"
            )
        if labels.size and int(labels.max()) > 9:
            raise ValueError(
                f"MNIST {split} labels under {root_path} go up to {int(labels.max())}; "
                "expected 0..9"
            )
    return (
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
    )
