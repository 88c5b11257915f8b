"""Which filesystem a path lives on: inotify sees no changes made by other hosts on network mounts,
and SQLite's WAL does not work on them."""

from __future__ import annotations

import os
from pathlib import Path

NETWORK_FS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs", "lustre", "davfs",
    "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.glusterfs", "fuse.cephfs", "fuse.davfs2", "fuse.smbnetfs",
}  # fmt: skip


def mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str]]:
    """(mount point, filesystem type) pairs, longest mount point first."""
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
