"""Safe extraction of the LRA release archive (`lra_release.gz`, a gzipped tar).

Refuses, before writing anything, members with absolute paths, `..` components, links that point
outside the target, and device/FIFO members; the error names the member.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from bench_common import BenchError


def _inside(target: Path, relative: str) -> bool:
    resolved = os.path.normpath(os.path.join(str(target), relative))
    return resolved == str(target) or resolved.startswith(str(target) + os.sep)


def check_member(archive: Path, target: Path, member: tarfile.TarInfo, links: frozenset[str] = frozenset()) -> None:
    """Raises BenchError if extracting `member` could write or point outside `target`.

    `links` are the symlinks of earlier members: a path through one of them is refused, since
    where it leads on disk depends on the link (a -> ".", then a/b -> ".." is the target's parent).
    """
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (parts and ":" in parts[0]):
        raise BenchError(f"{archive}: refusing member '{name}': absolute path")
    if ".." in parts or ".." in name.replace("\\", "/").split("/"):
        raise BenchError(f"{archive}: refusing member '{name}': '..' in path")
    for end in range(1, len(parts)):
        if str(PurePosixPath(*parts[:end])) in links:
            raise BenchError(f"{archive}: refusing member '{name}': its path goes through the symlink "
                             f"'{PurePosixPath(*parts[:end])}' of the archive")
    if not _inside(target, name):
        raise BenchError(f"{archive}: refusing member '{name}': outside {target}")
    if member.issym():
        link_base = os.path.dirname(name)
        if os.path.isabs(member.linkname) or not _inside(target, os.path.join(link_base, member.linkname)):
            raise BenchError(f"{archive}: refusing member '{name}': symlink to '{member.linkname}' points outside {target}")
    elif member.islnk():
        if os.path.isabs(member.linkname) or not _inside(target, member.linkname):
            raise BenchError(f"{archive}: refusing member '{name}': hard link to '{member.linkname}' points outside {target}")
    elif not (member.isfile() or member.isdir()):
        raise BenchError(f"{archive}: refusing member '{name}': not a regular file, directory or link")


def extract_release(archive: Path, target: Path) -> Path:
    """Extracts `archive` (tar, optionally gzipped) into `target` after checking every member."""
    archive, target = Path(archive), Path(target).resolve()
    if not archive.is_file():
        raise BenchError(f"archive {archive} does not exist")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            links: set[str] = set()
            for member in members:
                check_member(archive, target, member, frozenset(links))
                if member.issym():
                    links.add(str(PurePosixPath(member.name)))
            target.mkdir(parents=True, exist_ok=True)
            for member in members:
                tar.extract(member, target, set_attrs=False, **_filter_kwargs())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:  # damaged gzip: EOFError, BadGzipFile
        raise BenchError(f"{archive}: not a readable tar archive ({type(err).__name__}: {err})") from None
    return target


def _filter_kwargs() -> dict:
    # Python >= 3.12 (and patched 3.8-3.11) take a filter; "tar" keeps links we already vetted.
    return {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
