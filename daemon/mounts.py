"""Which filesystem a path lives on: inotify sees no changes made by other hosts on network mounts,
and SQLite's WAL does not work on them."""

from __future__ import annotations

import os
from pathlib import Path

NETWORK_FS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs", "lustre", "davfs",
    "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.glusterfs", "fuse.cephfs", "fuse.davfs2", "fuse.smbnetfs",
}  # fmt: skip
# For the tests only (tests/test_reliability_scaleout.py): read this file instead of /proc/self/mountinfo,
# so that the real daemon can be shown an NFS mount on a machine that has none. Not an ALBUMD_ variable,
# so the config loader never sees it.
MOUNTINFO_ENV = "ALBUMDTEST_MOUNTINFO"


def mounts(mountinfo: str | None = None) -> list[tuple[str, str]]:
    """(mount point, filesystem type) pairs, longest mount point first."""
    mountinfo = mountinfo or os.environ.get(MOUNTINFO_ENV) or "/proc/self/mountinfo"
    found: list[tuple[str, str]] = []
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].encode().decode("unicode_escape")
                found.append((point, right.split()[0]))
    except OSError:
        return []
    return sorted(found, key=lambda m: len(m[0]), reverse=True)


def fs_type(path: Path, table: list[tuple[str, str]] | None = None) -> str:
    real = os.path.realpath(path)
    for point, fstype in table if table is not None else mounts():
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return fstype
    return "unknown"


def is_network(path: Path, table: list[tuple[str, str]] | None = None) -> bool:
    return fs_type(path, table) in NETWORK_FS


def network_mounts_under(root: Path, table: list[tuple[str, str]] | None = None) -> list[Path]:
    real = os.path.realpath(root).rstrip("/") + "/"
    return [
        Path(point) for point, fstype in (table if table is not None else mounts())
        if point.startswith(real) and fstype in NETWORK_FS
    ]  # fmt: skip


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (None for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def sqlite_network_problem(url: str, table: list[tuple[str, str]] | None = None) -> str | None:
    """Why this job database must not be used, or None.

    SQLite on a network filesystem (NFS, SMB, sshfs...) is refused, with no override: its WAL needs
    memory shared by every process using the file, which hosts on a network cannot share, and its locks
    depend on the network filesystem's lock server; the result is a corrupted job database, i.e. lost
    track of which photos were archived. The way out is always cheap: a local state_dir, or PostgreSQL.
    """
    db_file = sqlite_file(url)
    if db_file is None:
        return None
    folder = db_file.parent
    fstype = fs_type(folder, table)
    if fstype not in NETWORK_FS:
        return None
    return (
        f"the SQLite job database {db_file} would be on a network filesystem ({fstype} at "
        f"{_mount_point(folder, table)}); SQLite's WAL and locking do not work there and the database "
        "would be corrupted. Put state_dir (or a sqlite database_url) on a local disk, or use PostgreSQL "
        "for a shared database: database_url: postgresql+psycopg://USER@HOST/albumd"
    )


def _mount_point(path: Path, table: list[tuple[str, str]] | None) -> str:
    real = os.path.realpath(path)
    for point, _fstype in table if table is not None else mounts():
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return point
    return "?"
