"""The MVTec downloader without network: offline message, resume, checks, atomic extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from PIL import Image

from cutpaste_lib.cli import main as cli_main
from cutpaste_lib.data import download as dl
from cutpaste_lib.data import list_categories, load_split
from cutpaste_lib.errors import DataNotFoundError, DatasetError


def _offline(*args, **kwargs):
    raise URLError("[Errno -3] Temporary failure in name resolution")


def _category(folder: Path, n_train: int = 3, n_good: int = 1, n_bad: int = 1) -> None:
    rng = np.random.default_rng(0)
    for split, defect, n in [
        ("train", "good", n_train),
        ("test", "good", n_good),
        ("test", "crack", n_bad),
    ]:
        (folder / split / defect).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                folder / split / defect / f"{i:03d}.png"
            )
            if defect != "good":
                (folder / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                mask = np.zeros((12, 12), np.uint8)
                mask[2:5, 3:9] = 255
                Image.fromarray(mask).save(folder / "ground_truth" / defect / f"{i:03d}_mask.png")


def _tar_xz(source_root: Path, names: list[str], out: Path) -> Path:
    with tarfile.open(out, "w:xz") as tar:
        for name in names:
            tar.add(source_root / name, arcname=name)
    return out


class _FakeResponse:
    """Serves ``payload`` like urlopen, honouring Range; optionally drops the connection."""

    def __init__(self, payload: bytes, request, *, honour_range=True, fail_after=None):
        start = 0
        range_header = request.get_header("Range")
        if range_header and honour_range:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
        self.status = 206 if start else 200
        self._body = io.BytesIO(payload[start:])
        self.headers = {"Content-Length": str(len(payload) - start)}
        self._fail_after = fail_after
        self._sent = 0

    def read(self, n):
        if self._fail_after is not None and self._sent >= self._fail_after:
            raise ConnectionResetError("connection reset by peer")
        block = self._body.read(
            n if self._fail_after is None else min(n, self._fail_after - self._sent)
        )
        self._sent += len(block)
        return block

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------ offline


def test_offline_message_names_url_and_where_to_extract(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "urlopen", _offline)
    root = tmp_path / "mvtec"
    with pytest.raises(DataNotFoundError) as info:
        dl.download_mvtec(root, "bottle", progress=False)
    message = str(info.value)
    assert dl.MVTEC_CATEGORY_ARCHIVES["bottle"].url in message
    assert (
        f"extract it into {root}" in message
        and "CUTPASTE_DATA" in message
        and "CC BY-NC-SA 4.0" in message
    )
    assert not root.exists()  # nothing written


def test_offline_cli_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dl, "urlopen", _offline)
    assert cli_main(["download", "mvtec", "--root", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and dl.MVTEC_FULL.url in err[0]


def test_unknown_category():
    with pytest.raises(ValueError, match="bottle"):
        dl.download_mvtec("/tmp/nowhere", "cat_pictures")


def test_archive_table():
    assert sorted(dl.MVTEC_CATEGORY_ARCHIVES) == sorted(dl.MVTEC_COUNTS)
    assert all(
        a.url.startswith("https://") and a.url.endswith(f"/{name}.tar.xz")
        for name, a in dl.MVTEC_CATEGORY_ARCHIVES.items()
    )
    assert sum(t for t, _ in dl.MVTEC_COUNTS.values()) == 3629  # MVTec AD paper, Table 1
    assert sum(t for _, t in dl.MVTEC_COUNTS.values()) == 1725


# ------------------------------------------------------------------ resumable, checked download


def test_download_resumes_after_a_dropped_connection(tmp_path, monkeypatch):
    payload = np.random.default_rng(1).bytes(3_000_000)
    archive = dl.Archive(
        "x.bin",
        "https://example.invalid/x.bin",
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    requests = []

    def first(request, timeout):
        requests.append(request.get_header("Range"))
        return _FakeResponse(payload, request, fail_after=1_200_000)

    monkeypatch.setattr(dl, "urlopen", first)
    dest = tmp_path / "x.bin"
    with pytest.raises(DataNotFoundError, match="interrupted"):
        dl.download_file(archive, dest)
    part = tmp_path / "x.bin.part"
    assert part.stat().st_size == 1_200_000 and not dest.exists()

    def second(request, timeout):
        requests.append(request.get_header("Range"))
        return _FakeResponse(payload, request)

    monkeypatch.setattr(dl, "urlopen", second)
    assert dl.download_file(archive, dest) == dest
    assert requests == [None, "bytes=1200000-"]
    assert dest.read_bytes() == payload and not part.exists()


def test_server_ignoring_range_restarts_from_zero(tmp_path, monkeypatch):
    payload = b"0123456789" * 1000
    (tmp_path / "x.bin.part").write_bytes(b"garbage-prefix")
    archive = dl.Archive(
        "x.bin", "https://example.invalid/x.bin", sha256=hashlib.sha256(payload).hexdigest()
    )
    monkeypatch.setattr(
        dl, "urlopen", lambda request, timeout: _FakeResponse(payload, request, honour_range=False)
    )
    assert dl.download_file(archive, tmp_path / "x.bin").read_bytes() == payload


@pytest.mark.parametrize("field", ["sha256", "size"])
def test_checksum_or_size_mismatch_deletes_the_partial_file(tmp_path, monkeypatch, field):
    payload = b"abc" * 100
    wrong = {"sha256": "0" * 64} if field == "sha256" else {"size": 1234}
    archive = dl.Archive("x.bin", "https://example.invalid/x.bin", **wrong)
    monkeypatch.setattr(dl, "urlopen", lambda request, timeout: _FakeResponse(payload, request))
    with pytest.raises(DatasetError, match="SHA-256" if field == "sha256" else "1234"):
        dl.download_file(archive, tmp_path / "x.bin")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ extraction


def test_extract_local_tar_xz(tmp_path):
    src = tmp_path / "src"
    _category(src / "widget")
    archive = _tar_xz(src, ["widget"], tmp_path / "widget.tar.xz")
    root = tmp_path / "data"
    assert dl.extract_archive(archive, root) == ["widget"]
    assert list_categories(root) == ["widget"]
    assert len(load_split(root, "widget", "train")) == 3
    test = load_split(root, "widget", "test")
    assert [s.label for s in test] == [0, 1] and test[1].mask_path.is_file()
    assert sorted(p.name for p in root.iterdir()) == ["widget"]  # no temporary folder left
    with pytest.raises(DatasetError, match="already exists"):
        dl.extract_archive(archive, root)
    assert dl.extract_archive(archive, root, overwrite=True) == ["widget"]
    assert sorted(p.name for p in root.iterdir()) == ["widget"]


def test_known_category_with_wrong_counts_is_not_placed(tmp_path):
    src = tmp_path / "src"
    _category(src / "bottle")  # 3 train images, MVTec AD's bottle has 209
    archive = _tar_xz(src, ["bottle"], tmp_path / "bottle.tar.xz")
    with pytest.raises(
        DatasetError, match=r"bottle: 3 train / 2 test images, MVTec AD has \(209, 83\)"
    ):
        dl.extract_archive(archive, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_unsafe_and_corrupt_archives(tmp_path):
    evil = tmp_path / "evil.tar.xz"
    with tarfile.open(evil, "w:xz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DatasetError, match="outside"):
        dl.extract_archive(evil, tmp_path / "data")
    assert not (tmp_path / "escaped.txt").exists() and list((tmp_path / "data").iterdir()) == []

    src = tmp_path / "src"
    _category(src / "widget")
    good = _tar_xz(src, ["widget"], tmp_path / "w.tar.xz").read_bytes()
    truncated = tmp_path / "truncated.tar.xz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"cannot extract .*truncated\.tar\.xz"):
        dl.extract_archive(truncated, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_download_mvtec_end_to_end_with_a_fake_server(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _category(src / "bottle", n_train=2, n_good=1, n_bad=1)
    payload = _tar_xz(src, ["bottle"], tmp_path / "bottle.tar.xz").read_bytes()
    monkeypatch.setitem(dl.MVTEC_COUNTS, "bottle", (2, 2))
    monkeypatch.setattr(dl, "urlopen", lambda request, timeout: _FakeResponse(payload, request))
    root = tmp_path / "mvtec"
    assert dl.download_mvtec(root, "bottle", progress=False) == root
    assert list_categories(root) == ["bottle"] and len(load_split(root, "bottle", "test")) == 2
    assert list((root / ".downloads").iterdir()) == []  # archive removed after extraction
    monkeypatch.setattr(dl, "urlopen", _offline)  # already there: no network needed
    assert dl.download_mvtec(root, "bottle", progress=False) == root
