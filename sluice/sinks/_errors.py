"""Errors of the database and file sinks (defined in ``sluice.errors``, re-exported here).

A ``SinkRowError`` is a record that can never be written as it is: the runtime retries
it without waiting, then sends it through the failure policy (dead-letter topic...). A
``SinkUnavailableError`` is a database that stayed out of reach past the sink's
``retry_for``: the app stops and commits nothing past that batch.

Example:
    >>> from sluice.errors import RecordError, SluiceError
    >>> issubclass(SinkRowError, SluiceError), issubclass(SinkRowError, ValueError), issubclass(SinkRowError, RecordError)
    (True, True, True)
"""

from __future__ import annotations

import errno

from sluice.errors import SinkError, SinkRowError, SinkUnavailableError

__all__ = ["SinkError", "SinkRowError", "SinkUnavailableError", "disk_unavailable"]

# the file system, not the record, is at fault: full, over quota, failing, remounted
# read-only, out of file handles or memory, a network share gone stale
_DISK_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EROFS,
        errno.ENFILE,
        errno.EMFILE,
        errno.ENOMEM,
        errno.ESTALE,
    }
)


def disk_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is a file-system failure that may heal (disk full, I/O error), not a bad record.

    Example:
        >>> import errno, os
        >>> disk_unavailable(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))), disk_unavailable(ValueError())
        (True, False)
    """
    return isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS
