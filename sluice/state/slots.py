"""One state directory per running process: ``<state_dir>/slot-<n>``, held by an flock.

Processes of one app on one machine (``--workers``, a restart, a paused zombie) share
``state_dir``; each claims the lowest slot no running process holds, so no two processes
ever open the same RocksDB files. The OS releases the lock when a process dies, so a
restart after a crash gets the dead process's slot (and its local state) back.
"""

from __future__ import annotations

import fcntl
import uuid
from pathlib import Path
from typing import IO

__all__ = ["Slot", "claim_slot"]


class Slot:
    """A claimed slot: its number, directory, the app instance id, and the lock held while running."""

    def __init__(self, number: int, directory: Path, instance: str, lock: IO[str]) -> None:
        self.number = number
        self.directory = directory
        self.instance = instance
        self._lock = lock

    def release(self) -> None:
        self._lock.close()


def claim_slot(state_dir: Path) -> Slot:
    """Claim the lowest free slot of ``state_dir`` (created if missing)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "instance-id"
    try:
        instance = path.read_text().strip()
    except OSError:
        instance = ""
    if not instance:
        instance = uuid.uuid4().hex[:12]  # unique across machines: transactional ids build on it
        path.write_text(instance)
    number = 0
    while True:
        lock = (state_dir / f"slot-{number}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            number += 1
            continue
        return Slot(number, state_dir / f"slot-{number}", instance, lock)
