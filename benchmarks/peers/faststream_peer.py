"""FastStream peer (stateless only): a subscriber that publishes, as the FastStream docs write it.

Run in ``benchmarks/.venv-faststream`` (``make bench-peers``):
``python -m benchmarks.peers.faststream_peer --input T --output O --group G ...``.
``@broker.subscriber(T, group_id=G, auto_offset_reset="earliest")`` +
``@broker.publisher(O)``: the handler returns the mapped click (or None, which the
publisher skips). The harness stops it with SIGTERM (FastStream's graceful stop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib.metadata import version
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker, KafkaMessage

from benchmarks.contenders import parse_args, peak_rss_mb, report, report_first


def build(args: Any, counter: list[int]) -> FastStream:
    broker = KafkaBroker(args.brokers)
    publisher = broker.publisher(args.output)

    @broker.subscriber(args.input, group_id=args.group, auto_offset_reset="earliest")
    async def clicks(event: dict, message: KafkaMessage) -> None:
        if counter[0] == 0:
            report_first()
        counter[0] += 1
        if event["type"] == "click":
            await publisher.publish(
                {"id": event["id"], "page": event["page"], "user": event["user"]}, key=message.raw_message.key
            )

    return FastStream(broker)


def main() -> None:
    args = parse_args(__doc__)
    if args.scenario != "stateless":
        msg = f"the FastStream peer runs scenario 'stateless' only, not {args.scenario!r}"
        raise SystemExit(msg)
    counter = [0]
    app = build(args, counter)
    report(version=f"faststream {version('faststream')} (aiokafka {version('aiokafka')})")
    asyncio.run(app.run(log_level=logging.WARNING))
    report(consumed=counter[0], finished=time.monotonic(), peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
