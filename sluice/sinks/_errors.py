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

from sluice.errors import SinkError, SinkRowError, SinkUnavailableError

__all__ = ["SinkError", "SinkRowError", "SinkUnavailableError"]
