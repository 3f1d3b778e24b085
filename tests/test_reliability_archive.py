"""The LRA release archive is extracted without path traversal or links leading outside the target:
a crafted archive is refused with one line naming the member, and nothing is written anywhere."""

import io
import itertools
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench_common import BenchError
from lra.archive import extract_release

_names = itertools.count()


def member(name, data=b"x", kind=tarfile.REGTYPE, link=""):
    return name, data, kind, link


def build(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def files_under(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


ATTACKS = {
    "parent-dir": [member("lra_release/ok.tsv"), member("lra_release/../../escaped.txt")],
    "leading-parent": [member("../escaped.txt")],
    "absolute": [member("lra_release/ok.tsv"), member("/tmp/escaped-by-archive.txt")],
    "symlink-outside": [member("lra_release/ok.tsv"), member("lra_release/out", kind=tarfile.SYMTYPE, link="../../..")],
    "symlink-absolute": [member("lra_release/passwd", kind=tarfile.SYMTYPE, link="/etc/passwd")],
    "hardlink-outside": [member("lra_release/hard", kind=tarfile.LNKTYPE, link="../../escaped.txt")],
    # Two links that each look harmless: a -> ".", then a/b -> ".." (which, through a, is the
    # target's parent), then a file written through b.
    "symlink-chain": [member("a", kind=tarfile.SYMTYPE, link="."), member("a/b", kind=tarfile.SYMTYPE, link=".."),
                      member("b/escaped.txt")],
    "file-through-symlink": [member("lra_release/up", kind=tarfile.SYMTYPE, link="."),
                             member("lra_release/up/../../escaped.txt")],
    "device": [member("lra_release/dev", kind=tarfile.CHRTYPE)],
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_crafted_archive_is_refused_and_nothing_is_written(tmp_path, attack):
    work = tmp_path / "work"
    work.mkdir()
    archive = build(tmp_path / "lra_release.gz", ATTACKS[attack])
    before = files_under(tmp_path)
    with pytest.raises(BenchError) as caught:
        extract_release(archive, work / "data")
    message = str(caught.value)
    assert str(archive) in message and "refusing member" in message
    assert files_under(tmp_path) == before  # nothing extracted, inside the target or outside it


def test_clean_archive_with_an_inside_link_extracts(tmp_path):
    archive = build(tmp_path / "lra_release.gz", [
        member("lra_release/listops-1000/basic_test.tsv", b"Source\tTarget\n"),
        member("lra_release/latest", kind=tarfile.SYMTYPE, link="listops-1000"),
    ])
    target = extract_release(archive, tmp_path / "data")
    assert (target / "lra_release" / "latest" / "basic_test.tsv").read_bytes() == b"Source\tTarget\n"


@pytest.fixture(scope="module")
def valid_archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("archive") / "valid.tar.gz"
    return build(path, [member("lra_release/a.tsv", b"Source\tTarget\n( 1 )\t1\n")]).read_bytes()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_and_truncated_archives_extract_or_raise_one_line(tmp_path_factory, valid_archive, data):
    cut = data.draw(st.one_of(st.integers(0, len(valid_archive)).map(lambda n: valid_archive[:n]),
                              st.binary(max_size=200)))
    directory = tmp_path_factory.mktemp(f"case{next(_names)}")
    path = directory / "lra_release.gz"
    path.write_bytes(cut)
    try:
        extract_release(path, directory / "data")
    except BenchError as err:
        assert str(path) in str(err), f"{err} does not name the archive"
