r"""Real datasets from files on the user's machine: MNIST, Fashion-MNIST, CIFAR-10 (and MNIST-1D by name).

``bbp data fetch NAME`` (:func:`fetch`) downloads the official files into the
data directory (:func:`data_dir`: ``$BBP_DATA``, default the user's cache
directory, ``~/.cache/bbp`` on Linux), verifies each file's MD5 checksum
against the published one (the checksums torchvision and the datasets' pages
list), parses them (IDX for the MNIST family, the pickled batches of the
CIFAR-10 Python archive) and converts them once to ``.npy``:
``DIR/NAME/{train,test}_{x,y}.npy``, images ``uint8`` ``(N, H, W, C)`` and
labels ``uint8`` ``(N,)``. ``--from DIR`` takes files downloaded by hand
instead (a machine without network). :func:`load` reads the ``.npy`` files
and returns :class:`Dataset` pairs with pixels scaled to ``[0, 1]``, flattened,
and one-hot targets; when they are missing it raises :class:`DataMissing`
(a ``ValueError``) that says how to fetch them, which the CLI reports with
exit status 2.

The CIFAR batches are pickles; they are read only after the archive's
checksum matched, and with an unpickler that admits nothing but numpy arrays,
lists, dicts, strings and numbers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tasks import Dataset


class DataMissing(ValueError):
    """The files of a dataset are not in the data directory (the message says how to fetch them)."""


class ChecksumError(ValueError):
    """A file's checksum differs from the published one."""


@dataclass(frozen=True)
class Source:
    """One official file: its name, published MD5 and where it is downloaded from (first URL first)."""

    filename: str
    md5: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class RealDataset:
    """A real dataset: its files, their format (``idx`` or ``cifar``), image shape and class count."""

    name: str
    title: str
    sources: tuple[Source, ...]
    format: str
    image_shape: tuple[int, int, int]
    n_classes: int = 10


def _idx_sources(bases: tuple[str, ...], md5s: dict[str, str]) -> tuple[Source, ...]:
    return tuple(Source(name, md5, tuple(base + name for base in bases)) for name, md5 in md5s.items())


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")

DATASETS: dict[str, RealDataset] = {
    "mnist": RealDataset("mnist", "MNIST (LeCun et al. 1998)", _idx_sources(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        dict(zip(IDX_FILES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                             "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")))),
        "idx", (28, 28, 1)),
    "fashion-mnist": RealDataset("fashion-mnist", "Fashion-MNIST (Xiao et al. 2017)", _idx_sources(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        dict(zip(IDX_FILES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                             "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")))),
        "idx", (28, 28, 1)),
    "cifar10": RealDataset("cifar10", "CIFAR-10 (Krizhevsky 2009)", (
        Source("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
               ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),), "cifar", (32, 32, 3)),
}

#: Names :func:`load` also accepts: datasets generated in memory, not fetched.
GENERATED = ("mnist1d",)
SPLITS = ("train_x", "train_y", "test_x", "test_y")


def get_dataset(name: str) -> RealDataset:
    """The :class:`RealDataset` called ``name``; ``ValueError`` naming the allowed ones otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)} (fetched with bbp data fetch) "
                         f"and {', '.join(GENERATED)} (generated)")
    return DATASETS[name]


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``root``, else ``$BBP_DATA``, else the user's cache directory + ``/bbp``.

    The cache directory is ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux,
    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("BBP_DATA"):
        return Path(os.environ["BBP_DATA"]).expanduser()
    if sys.platform == "darwin":
        cache = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        cache = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "bbp"


def md5_of(path: str | os.PathLike) -> str:
    """The MD5 hex digest of a file (an integrity check against the published sums, not security)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | os.PathLike, md5: str, name: str | None = None) -> None:
    """Raise :class:`ChecksumError` naming the file (``name``, default its own) and both sums unless they agree."""
    found = md5_of(path)
    if found != md5:
        raise ChecksumError(f"checksum of {name or Path(path).name} is {found}, expected {md5}: the file is corrupt "
                            f"or not the official one (it was not kept); fetch again")


# --- parsers -----------------------------------------------------------------------------------------

#: IDX type codes (the third byte of the magic number) and their big-endian numpy dtypes.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (the MNIST format), gzip-compressed or not.

    The format: two zero bytes, a type code (:data:`IDX_TYPES`), the number of
    dimensions ``d``, then ``d`` big-endian 32-bit sizes, then the values in
    C order. Raises ``ValueError`` for a bad magic number, type code or length.
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError("not an IDX file: it must start with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise ValueError(f"IDX type code 0x{code:02x} is unknown; allowed: "
                         f"{', '.join(f'0x{c:02x}' for c in IDX_TYPES)}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX file too short for its {ndim} dimension sizes")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"IDX file of shape {shape} should have {expected} bytes, has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers, and nothing else."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "bytearray"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise ValueError(f"a CIFAR batch may hold only arrays and plain values, found {module}.{name}")


def read_cifar_batch(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse one batch of the CIFAR-10 Python archive: images ``(N, 32, 32, 3)`` uint8 and labels ``(N,)``.

    A batch is a pickled dict with ``b"data"``, ``(N, 3072)`` uint8 rows of
    1024 red, then green, then blue values (row-major 32 x 32), and
    ``b"labels"``, N integers in ``0..9``.
    """
    batch = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError("a CIFAR batch must be a dict with the keys b'data' and b'labels'")
    images = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if images.ndim != 2 or images.shape[1] != 3072 or labels.shape != (images.shape[0],):
        raise ValueError(f"a CIFAR batch must hold (N, 3072) images and N labels, got {images.shape} and "
                         f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError("CIFAR-10 labels must lie in 0..9")
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels.astype(np.uint8)


def _convert_idx(spec: RealDataset, folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx((folder / f"{prefix}-images-idx3-ubyte.gz").read_bytes())
        labels = read_idx((folder / f"{prefix}-labels-idx1-ubyte.gz").read_bytes())
        if images.ndim != 3 or labels.shape != (images.shape[0],):
            raise ValueError(f"{spec.name} {split}: images {images.shape} and labels {labels.shape} do not match")
        arrays[f"{split}_x"] = images.astype(np.uint8)[..., None]
        arrays[f"{split}_y"] = labels.astype(np.uint8)
    return arrays


def _convert_cifar(spec: RealDataset, folder: Path) -> dict[str, np.ndarray]:
    parts = {}
    with tarfile.open(folder / spec.sources[0].filename, "r:gz") as archive:
        for member in archive.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and (base.startswith("data_batch_") or base == "test_batch"):
                parts[base] = read_cifar_batch(archive.extractfile(member).read())
    train = [parts[k] for k in sorted(p for p in parts if p.startswith("data_batch_"))]
    if not train or "test_batch" not in parts:
        raise ValueError(f"{spec.sources[0].filename} holds no data_batch_* or no test_batch")
    return {"train_x": np.concatenate([t[0] for t in train]), "train_y": np.concatenate([t[1] for t in train]),
            "test_x": parts["test_batch"][0], "test_y": parts["test_batch"][1]}


CONVERTERS = {"idx": _convert_idx, "cifar": _convert_cifar}


# --- fetch and load ----------------------------------------------------------------------------------

def _download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:  # noqa: S310 - https/http
        shutil.copyfileobj(response, out)


def fetch(name: str, *, root=None, source_dir=None, download: Callable[[str, Path], None] | None = None,
          log: Callable[[str], None] = lambda message: None) -> Path:
    """Download (or copy from ``source_dir``), verify and convert dataset ``name``; returns its folder.

    Files already present with the right checksum are kept; a file with a
    wrong checksum raises :class:`ChecksumError` (nothing is converted). The
    ``.npy`` files are written through temporary names and renamed, so an
    interrupted fetch leaves no half-written array. ``download(url, path)``
    replaces the network download (the tests pass one).
    """
    spec = get_dataset(name)
    folder = data_dir(root) / spec.name
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    download = download or _download
    for src in spec.sources:
        target = raw / src.filename
        if target.exists() and md5_of(target) == src.md5:
            log(f"{src.filename}: present, checksum ok")
            continue
        partial = target.with_name(target.name + ".part")
        if source_dir is not None:
            given = Path(source_dir).expanduser() / src.filename
            if not given.exists():
                raise DataMissing(f"{given} does not exist: put the official {src.filename} there, or fetch "
                                  f"without --from to download it from {src.urls[0]}")
            shutil.copyfile(given, partial)
        else:
            errors = []
            for url in src.urls:
                try:
                    log(f"{src.filename}: downloading {url}")
                    download(url, partial)
                    break
                except OSError as err:
                    errors.append(f"{url}: {err}")
            else:
                partial.unlink(missing_ok=True)
                raise DataMissing(f"could not download {src.filename} ({'; '.join(errors)}); download it by hand "
                                  f"and run: bbp data fetch {name} --from FOLDER")
        try:
            verify(partial, src.md5, src.filename)
        except ChecksumError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        log(f"{src.filename}: checksum ok")
    arrays = CONVERTERS[spec.format](spec, raw)
    for key in SPLITS:
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npy", delete=False) as tmp:
            np.save(tmp, arrays[key])
        Path(tmp.name).replace(folder / f"{key}.npy")
    log(f"{name}: {arrays['train_x'].shape[0]} training and {arrays['test_x'].shape[0]} test images in {folder}")
    return folder


def load(name: str, *, root=None, n_train: int | None = None, n_test: int | None = None) -> tuple[Dataset, Dataset]:
    """The training and test sets of ``name``: pixels scaled to ``[0, 1]``, one-hot targets.

    ``mnist``, ``fashion-mnist`` and ``cifar10`` come from the converted
    ``.npy`` files in :func:`data_dir` (:func:`fetch`); ``mnist1d`` is
    generated (:func:`sim.data.mnist1d.mnist1d`, its canonical split).
    ``n_train`` / ``n_test`` keep the first samples of each split. ``x`` is
    flattened, ``(N, H W C)`` in the order of ``(H, W, C)``
    (``info["image_shape"]``). Raises
    :class:`DataMissing` (a ``ValueError``) saying how to fetch the data when
    the files are not there.
    """
    for key, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1):
            raise ValueError(f"{key} must be a positive integer or None, got {value!r}")
    if name in GENERATED:
        from .mnist1d import mnist1d

        train, test = mnist1d()
        return _head(train, n_train), _head(test, n_test)
    spec = get_dataset(name)
    folder = data_dir(root) / spec.name
    missing = [key for key in SPLITS if not (folder / f"{key}.npy").exists()]
    if missing:
        raise DataMissing(f"dataset {name!r} is not in {folder} (missing {', '.join(k + '.npy' for k in missing)}): "
                          f"fetch it once with `bbp data fetch {name}` (downloads the official files, verifies "
                          f"their checksums and converts them; set BBP_DATA or --dir for another folder)")
    out = []
    for split, count in (("train", n_train), ("test", n_test)):
        x = np.load(folder / f"{split}_x.npy", allow_pickle=False)
        labels = np.load(folder / f"{split}_y.npy", allow_pickle=False).astype(np.int64)
        if count is not None:
            x, labels = x[:count], labels[:count]
        x = x.reshape(x.shape[0], -1).astype(np.float64) / 255.0
        y = np.eye(spec.n_classes)[labels]
        out.append(Dataset(x, y, "classification", {"labels": labels, "image_shape": spec.image_shape}))
    return tuple(out)


def _head(data: Dataset, count: int | None) -> Dataset:
    if count is None:
        return data
    return Dataset(data.x[:count], data.y[:count], data.kind, dict(data.info))
