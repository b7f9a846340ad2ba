"""The demo's event source: ``sluice produce``'s ``clicks`` template, with some dirt.

Like real traffic it is not all clean: every ``malformed_every``-th event is broken
JSON, and every ``broken_every``-th one lacks its ``page`` field. The records go out
through ``sluice.cli.produce.produce_records``, the load generator behind
``sluice produce TOPIC --template clicks``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import orjson

from sluice.cli.produce import TEMPLATES, produce_records


def produce_events(
    brokers: str, topic: str, count: int, seed: int = 7, malformed_every: int = 0, broken_every: int = 0
) -> Counter[str]:
    """Produce ``count`` events to ``topic``; return how many of each kind were acknowledged.

    The kinds are the event types, plus ``malformed`` (not JSON; no type counted) and
    ``no-page`` (an event without its ``page`` field; its type is counted too).
    """
    kinds: Counter[str] = Counter()

    def events() -> Iterator[tuple[bytes, bytes]]:
        for i, (key, value) in enumerate(TEMPLATES["clicks"](seed=seed)):
            if i >= count:
                return
            if malformed_every and i % malformed_every == malformed_every - 1:
                kinds["malformed"] += 1
                yield key, value[: len(value) // 2]
                continue
            event = orjson.loads(value)
            event["id"] = i
            if broken_every and i % broken_every == broken_every - 1:
                del event["page"]
                kinds["no-page"] += 1
            kinds[event["type"]] += 1
            yield key, orjson.dumps(event)

    report = produce_records(topic, brokers, events(), count=count)
    if report.errors or report.acknowledged != count:
        msg = f"{count - report.acknowledged} events were not delivered: {report.first_error}"
        raise RuntimeError(msg)
    return kinds
