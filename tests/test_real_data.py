"""Real datasets (sim.data.real, bbp data fetch): parsers and checksums on small generated files, no downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from sim.cli import main
from sim.data import real
from sim.data.real import ChecksumError, DataMissing, data_dir, fetch, load, read_cifar_batch, read_idx


def idx_bytes(array: np.ndarray, code: int, compress: bool = True) -> bytes:
    """An IDX file: 0, 0, type code, ndim, big-endian sizes, big-endian values."""
    dtype = real.IDX_TYPES[code]
    raw = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes() + \
        np.asarray(array, dtype=dtype).tobytes()
    return gzip.compress(raw) if compress else raw


def cifar_batch_bytes(images: np.ndarray, labels) -> bytes:
    """A CIFAR-10 Python batch: (N, 3072) rows of the red, green and blue planes, and the labels."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return pickle.dumps({b"batch_label": b"testing batch", b"labels": list(labels), b"data": rows,
                         b"filenames": [b"x.png"] * len(images)}, protocol=2)


@pytest.fixture
def mnist_like(tmp_path, monkeypatch):
    """Small MNIST-format files (5 training and 3 test images of 28 x 28) and a dataset entry with their sums."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": (rng.integers(0, 256, (5, 28, 28)), 0x08),
              "train-labels-idx1-ubyte.gz": (np.array([0, 1, 2, 9, 4]), 0x08),
              "t10k-images-idx3-ubyte.gz": (rng.integers(0, 256, (3, 28, 28)), 0x08),
              "t10k-labels-idx1-ubyte.gz": (np.array([7, 7, 3]), 0x08)}
    files = {name: idx_bytes(a, code) for name, (a, code) in arrays.items()}
    sources = tuple(real.Source(name, hashlib.md5(data).hexdigest(), (f"https://example.invalid/{name}",))
                    for name, data in files.items())
    monkeypatch.setitem(real.DATASETS, "mnist", replace(real.DATASETS["mnist"], sources=sources))
    return files, {k: a for k, (a, _) in arrays.items()}


def serve(files: dict, calls: list | None = None):
    def download(url, target: Path):
        if calls is not None:
            calls.append(url)
        target.write_bytes(files[url.rsplit("/", 1)[-1]])
    return download


# --- parsers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", sorted(real.IDX_TYPES))
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(code, compress):
    rng = np.random.default_rng(code)
    array = rng.integers(0, 100, size=(3, 4, 2)).astype(real.IDX_TYPES[code])
    parsed = read_idx(idx_bytes(array, code, compress))
    np.testing.assert_array_equal(parsed, array)
    assert parsed.dtype.isnative


@pytest.mark.parametrize("data,match", [
    (b"\x01\x00\x08\x01" + b"\x00" * 8, "not an IDX file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "type code 0x07 is unknown"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "should have 11 bytes, has 9"),
    (b"\x00\x00\x08\x02\x00\x00", "too short"),
])
def test_read_idx_rejects_bad_files(data, match):
    with pytest.raises(ValueError, match=match):
        read_idx(data)


def test_read_cifar_batch_keeps_the_channel_planes_apart():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    parsed, labels = read_cifar_batch(cifar_batch_bytes(images, [3, 0, 9, 1]))
    np.testing.assert_array_equal(parsed, images)
    np.testing.assert_array_equal(labels, [3, 0, 9, 1])
    # the first 1024 values of a row are the red plane, row by row
    row = images.transpose(0, 3, 1, 2).reshape(4, -1)[0]
    np.testing.assert_array_equal(row[:1024].reshape(32, 32), images[0, :, :, 0])


def test_read_cifar_batch_admits_only_arrays():
    evil = pickle.dumps({b"data": Fraction(1, 2), b"labels": [0]})
    with pytest.raises(ValueError, match="only arrays and plain values, found fractions.Fraction"):
        read_cifar_batch(evil)
    with pytest.raises(ValueError, match="b'data' and b'labels'"):
        read_cifar_batch(pickle.dumps({b"labels": [1]}))
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        read_cifar_batch(cifar_batch_bytes(np.zeros((1, 32, 32, 3), np.uint8), [10]))


# --- fetch, checksums and load -------------------------------------------------------------------------

def test_fetch_verifies_converts_and_load_reads(tmp_path, mnist_like):
    files, arrays = mnist_like
    calls = []
    folder = fetch("mnist", root=tmp_path, download=serve(files, calls))
    assert len(calls) == 4 and folder == tmp_path / "mnist"
    assert sorted(p.name for p in folder.glob("*.npy")) == sorted(f"{k}.npy" for k in real.SPLITS)
    train, test = load("mnist", root=tmp_path)
    assert train.x.shape == (5, 784) and test.x.shape == (3, 784)
    np.testing.assert_allclose(train.x, arrays["train-images-idx3-ubyte.gz"].reshape(5, -1) / 255.0, rtol=1e-15)
    np.testing.assert_array_equal(train.y.argmax(1), [0, 1, 2, 9, 4])
    np.testing.assert_array_equal(test.info["labels"], [7, 7, 3])
    assert train.info["image_shape"] == (28, 28, 1)
    # again: the files are present with the right sums, nothing is downloaded
    fetch("mnist", root=tmp_path, download=serve(files, calls))
    assert len(calls) == 4
    small, _ = load("mnist", root=tmp_path, n_train=2)
    assert small.n_samples == 2


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(tmp_path, mnist_like):
    files, _ = mnist_like
    corrupt = dict(files)
    good = files["train-labels-idx1-ubyte.gz"]
    corrupt["train-labels-idx1-ubyte.gz"] = good[:10] + bytes([good[10] ^ 0xFF]) + good[11:]  # one byte flipped
    with pytest.raises(ChecksumError, match="checksum of train-labels-idx1-ubyte.gz is [0-9a-f]{32}, expected"):
        fetch("mnist", root=tmp_path, download=serve(corrupt))
    raw = tmp_path / "mnist" / "raw"
    assert not (raw / "train-labels-idx1-ubyte.gz").exists()
    assert not list(raw.glob("*.part")) and not list((tmp_path / "mnist").glob("*.npy"))


def test_fetch_from_a_folder_and_the_cli(tmp_path, mnist_like, capsys):
    files, _ = mnist_like
    source = tmp_path / "downloads"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)
    assert main(["data", "fetch", "mnist", "--dir", str(tmp_path / "store"), "--from", str(source)]) == 0
    assert "ready in" in capsys.readouterr().out
    assert load("mnist", root=tmp_path / "store")[0].n_samples == 5
    (source / "t10k-images-idx3-ubyte.gz").write_bytes(b"not the file")
    assert main(["data", "fetch", "mnist", "--dir", str(tmp_path / "other"), "--from", str(source)]) == 2
    assert "checksum of t10k-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_fetch_cifar_archive(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    buffer = io.BytesIO()
    batches = {}
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, n in (("data_batch_1", 3), ("data_batch_2", 2), ("test_batch", 2)):
            images = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
            labels = rng.integers(0, 10, n)
            batches[name] = (images, labels)
            data = cifar_batch_bytes(images, labels)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    source = real.Source("cifar-10-python.tar.gz", hashlib.md5(blob).hexdigest(), ("https://example.invalid/c.tgz",))
    monkeypatch.setitem(real.DATASETS, "cifar10", replace(real.DATASETS["cifar10"], sources=(source,)))
    fetch("cifar10", root=tmp_path, download=lambda url, target: target.write_bytes(blob))
    train, test = load("cifar10", root=tmp_path)
    assert train.x.shape == (5, 3072) and test.x.shape == (2, 3072)
    expected = np.concatenate([batches["data_batch_1"][0], batches["data_batch_2"][0]])
    np.testing.assert_allclose(train.x, expected.reshape(5, -1) / 255.0, rtol=1e-15)
    np.testing.assert_array_equal(test.info["labels"], batches["test_batch"][1])


def test_missing_data_says_how_to_fetch(tmp_path):
    with pytest.raises(DataMissing, match=r"not in .*: fetch it once with `bbp data fetch fashion-mnist`"):
        load("fashion-mnist", root=tmp_path)
    assert issubclass(DataMissing, ValueError)  # the CLI reports it with exit status 2


def test_download_failure_says_how_to_fetch_by_hand(tmp_path, mnist_like):
    def offline(url, target):
        raise OSError("network unreachable")

    with pytest.raises(DataMissing, match="download it by hand and run: bbp data fetch mnist --from FOLDER"):
        fetch("mnist", root=tmp_path, download=offline)


def test_unknown_names_and_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; allowed: mnist, fashion-mnist, cifar10"):
        load("svhn", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        fetch("svhn", root=tmp_path)
    with pytest.raises(ValueError, match="n_train must be a positive integer or None, got 0"):
        load("mnist", root=tmp_path, n_train=0)


def test_mnist1d_by_name():
    train, test = load("mnist1d", n_train=100, n_test=50)
    assert train.x.shape == (100, 40) and test.n_samples == 50


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BBP_DATA", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d"
    assert data_dir(tmp_path / "e") == tmp_path / "e"
    monkeypatch.delenv("BBP_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if data_dir().parent == tmp_path / "cache":  # Linux
        assert data_dir() == tmp_path / "cache" / "bbp"
    assert data_dir().name == "bbp"


def test_published_checksums_are_well_formed():
    for spec in real.DATASETS.values():
        for src in spec.sources:
            assert len(src.md5) == 32 and int(src.md5, 16) >= 0 and src.urls


def test_real_rules_without_data_stops_with_how_to_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BBP_DATA", str(tmp_path / "empty"))
    code = main(["run", "real-rules", "--quick", "--set", "dataset=fashion-mnist", "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "bbp data fetch fashion-mnist" in err and "Traceback" not in err


def test_real_rules_on_fetched_files(tmp_path, mnist_like, monkeypatch):
    from sim.experiments import Context, run_experiment

    files, _ = mnist_like
    fetch("mnist", root=tmp_path, download=serve(files))
    monkeypatch.setenv("BBP_DATA", str(tmp_path))
    _, result = run_experiment("real-rules", context=Context(quick=True, n_seeds=2, progress=False),
                               overrides={"rules": ["bp", "drtp"], "lrs": [0.1, 0.01], "steps": 20,
                                          "record_every": 10, "hidden": [8]})
    assert result.metrics["dataset"] == "mnist"
    assert len(result.metrics["bp"]["test_accuracy"]["members"]) == 2


def test_real_rules_lenet_on_fetched_files(tmp_path, mnist_like, monkeypatch):
    from sim.experiments import Context, run_experiment

    files, _ = mnist_like
    fetch("mnist", root=tmp_path, download=serve(files))
    monkeypatch.setenv("BBP_DATA", str(tmp_path))
    _, result = run_experiment("real-rules", context=Context(quick=True, n_seeds=2, progress=False),
                               overrides={"arch": "lenet", "rules": ["bp", "fa", "cdni"], "lrs": [0.05, 0.05, 0.01], "steps": 6,
                                          "batch_size": 2, "record_every": 3})
    assert result.metrics["arch"] == "lenet" and set(result.metrics["cnn"]) == {"bp", "fa", "cdni"}
    assert result.arrays["cnn_fa_test_accuracy"].shape == (3, 2)
    angles = result.arrays["cnn_fa_gradient_angle"]  # 3 convolutions, 2 dense layers
    assert angles.shape == (3, 2, 5) and np.all((angles[:, :, :4] >= 0) & (angles[:, :, :4] <= 180))
    np.testing.assert_allclose(result.arrays["cnn_bp_gradient_angle"], 0.0, atol=1e-5)
    assert {"real_cnn", "real_cnn_alignment"} <= set(result.figures)
    from sim.plots import figure_problems

    problems = [p for name, fig in result.figures.items() for p in figure_problems(fig, name=name)]
    assert not problems, "\n".join(problems)
    for overrides, match in (({"arch": "lenet", "dataset": "mnist1d"}, "LeNet takes images"),
                             ({"arch": "lenet", "rules": ["hebb"], "lrs": [0.1]}, "hebb")):
        with pytest.raises(ValueError, match=match):
            run_experiment("real-rules", context=Context(quick=True, n_seeds=1, progress=False), overrides=overrides)


def test_lenet_geometry_and_image_layout():
    from sim.conv import forward
    from sim.conv_arch import lenet, to_images

    for shape in ((28, 28, 1), (32, 32, 3)):  # MNIST padded by 2 as biotorch's 32 x 32; CIFAR-10 as it is
        net = lenet(shape, 10, 2, seed=0)
        assert [w.shape[1:] for w in net.weights] == [(6, shape[2], 5, 5), (16, 6, 5, 5), (120, 16, 5, 5), (84, 120),
                                                      (10, 84)]
        x = np.random.default_rng(0).random((3, shape[0] * shape[1] * shape[2]))
        _, _, outputs, _ = forward(net, to_images(x, shape))
        assert [o.shape[2:] for o in outputs[:3]] == [(6, 14, 14), (16, 5, 5), (120, 1, 1)]
    images = np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3)  # (N, H, W, C) flattened in that order
    np.testing.assert_array_equal(to_images(images.reshape(2, -1), (4, 4, 3)), images.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="28 x 28 or 32 x 32"):
        lenet((20, 20, 1), 10)
    with pytest.raises(ValueError, match="need x of shape"):
        to_images(np.zeros((2, 10)), (4, 4, 3))


def test_lenet_learns_a_small_image_task():
    """28 x 28 images whose class is the brighter half (left or right): LeNet by BP and Adam learns it in 40 steps."""
    from sim.conv import train_convnet
    from sim.conv_arch import lenet, to_images

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    images = rng.random((200, 28, 28, 1)) * 0.5
    images[labels == 0, :, :14] += 0.5
    images[labels == 1, :, 14:] += 0.5
    x, y = to_images(images.reshape(200, -1), (28, 28, 1)), np.eye(2)[labels]
    net = lenet((28, 28, 1), 2, 2, seed=0)
    _, record, _ = train_convnet(net, x[:150], y[:150], rule="bp", steps=40, lr=0.003, batch_size=25,
                                 optimizer="adam", test=(x[150:], y[150:]), record_every=20)
    assert np.all(record["accuracy"][0] < 0.75)  # chance at the start
    assert record["diverged"] == [] and np.all(record["accuracy"][-1] >= 0.9)
