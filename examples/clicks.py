"""The seed article's click pipeline, done right.

Instead of::

    for message in consumer:                     # auto-commit: offsets of work not done
        data = json.loads(message.value)
        if data["type"] == "click":
            process_click(data)

it is::

    sluice run examples.clicks:app

Topic names come from ``DEMO_EVENTS`` / ``DEMO_CLICKS`` / ``DEMO_DLQ`` (default
``events`` / ``clicks`` / ``events.dlq``); clicks are also upserted into the SQLite
table ``clicks`` of ``DEMO_DB`` (default ``clicks.db``), and clicks per page per minute
into its table ``clicks_per_minute`` (a windowed count; state under ``.sluice-state/``). Malformed events and clicks the map cannot
handle are retried, then written to the dead-letter topic with their context; the
stream goes on and nothing is lost.
"""

from __future__ import annotations

import os

from sluice import App, sinks

EVENTS = os.environ.get("DEMO_EVENTS", "events")
CLICKS = os.environ.get("DEMO_CLICKS", "clicks")
DLQ = os.environ.get("DEMO_DLQ", f"{EVENTS}.dlq")
DB = os.environ.get("DEMO_DB", "clicks.db")

app = App(
    os.environ.get("DEMO_APP", "clicks"),
    brokers=os.environ.get("SLUICE_BROKERS", "127.0.0.1:9092"),
    state_dir=os.environ.get("DEMO_STATE_DIR"),
)

app.on_error(retries=2, backoff="5ms..50ms", dead_letter=DLQ)

events = app.stream(EVENTS, value="json")
clicks = events.filter(lambda e: e["type"] == "click")
rows = clicks.map(lambda e: {"id": e["id"], "user": e["user"], "page": e["page"], "ts": e["ts"]})
rows.to(CLICKS)
rows.sink(sinks.sqlite(DB, table="clicks", key="id"))  # process_click "writes to the database"

# clicks per page per minute: repartitioned by page, counted in 1-minute windows on a RocksDB
# store backed by a changelog topic; every update is upserted, so the table holds the current counts
per_minute = clicks.key_by(lambda e: e["page"]).window(tumbling="1m", grace="10s").count(name="page-minute")
per_minute.current().map(lambda w: {"page": w["key"], "minute": w["start"], "clicks": w["value"]}).sink(
    sinks.sqlite(DB, table="clicks_per_minute", key=["page", "minute"])
)
