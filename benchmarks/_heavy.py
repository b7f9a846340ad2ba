"""The "heavy" stateless pipeline: real per-record work, written per record and columnar.

Each input is an order (about 170 bytes of JSON, see ``make_order``). The work is the
cleaning pandas and polars users do: ten numeric expressions (amounts, a haversine
distance, calendar fields from the epoch timestamp, a score and a z-score), two string
normalizations (a slug of the messy user name, a trimmed upper-case country) and a
conditional (the order's tier); orders of the "bronze" tier are then dropped, so about
three in four go out.

``clean`` is that work for one record (sluice's ``map``/``filter`` and the hand loop use
it); ``clean_frame`` is the same work on a polars frame (``map_batch``). Both give the
same values: ``verify_heavy`` reads an output topic back and compares every record with
``clean`` of its input (floats within 1e-9, relative).

Example:
    >>> row = clean(make_order(3))
    >>> row["user"], row["country"], row["tier"], keep(row)
    ('user-00003-dx', 'US', 'silver', True)
    >>> import polars as pl
    >>> framed = clean_frame(pl.DataFrame([make_order(i) for i in range(20)]))
    >>> _same(row, framed.filter(pl.col("id") == 3).row(0, named=True))
    True
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import orjson

from benchmarks._kafka import BROKERS, Verdict, read_topic

__all__ = ["clean", "clean_frame", "expected_ids", "keep", "make_order", "verify_heavy"]

_COUNTRIES = ("de", " DE", "fr ", "Us", "br", "IN ", " jp", "se")
_TAX = (0.07, 0.19, 0.2, 0.1)
#: the warehouse the distances are measured from (Berlin)
HQ_LAT, HQ_LON = math.radians(52.52), math.radians(13.405)
_HQ_COS = math.cos(HQ_LAT)
EARTH_KM = 6371.0
SLUG = re.compile(r"[^a-z0-9]+")
#: the fields of an output record, in order
FIELDS = (
    "id",
    "user",
    "country",
    "tier",
    "gross",
    "net",
    "total",
    "unit",
    "dist_km",
    "hour",
    "weekday",
    "score",
    "z",
)


def make_order(i: int) -> dict[str, Any]:
    """Input record ``i``: an order with messy strings and numeric fields."""
    return {
        "id": i,
        "ts": 1_718_000_000_000 + i * 7_919,
        "user": f"  User {i % 5003:05d}/{'ABCDE'[i % 5]}x ",
        "country": _COUNTRIES[i % len(_COUNTRIES)],
        "price": round(5 + (i * 7919 % 9973) / 100, 2),
        "qty": 1 + i % 9,
        "discount": (i % 7) * 0.05,
        "tax": _TAX[i % len(_TAX)],
        "lat": 35 + (i * 31 % 2500) / 100,
        "lon": -10 + (i * 17 % 4000) / 100,
    }


def clean(e: dict[str, Any]) -> dict[str, Any]:
    """The per-record work on one order (what sluice's ``map`` and the hand loop run)."""
    price, qty, discount = e["price"], e["qty"], e["discount"]
    gross = price * qty
    net = gross * (1.0 - discount)
    total = net * (1.0 + e["tax"])
    lat, lon = math.radians(e["lat"]), math.radians(e["lon"])
    a = math.sin((lat - HQ_LAT) / 2) ** 2 + math.cos(lat) * _HQ_COS * math.sin((lon - HQ_LON) / 2) ** 2
    dist = 2 * EARTH_KM * math.asin(math.sqrt(a))
    when = dt.datetime.fromtimestamp(e["ts"] / 1000, dt.UTC)
    return {
        "id": e["id"],
        "user": SLUG.sub("-", e["user"].strip().lower()).strip("-"),
        "country": e["country"].strip().upper(),
        "tier": "gold" if total > 400 else "silver" if total > 100 else "bronze",
        "gross": gross,
        "net": net,
        "total": total,
        "unit": total / qty,
        "dist_km": dist,
        "hour": when.hour,
        "weekday": when.weekday(),
        "score": 0.6 * math.log1p(total) + 0.004 * dist - 0.5 * discount,
        "z": (price - 54.86) / 28.8,
    }


def keep(row: dict[str, Any]) -> bool:
    """The filter after ``clean``: bronze orders are dropped."""
    return row["tier"] != "bronze"


def clean_frame(df: Any) -> Any:
    """``clean`` then ``keep`` on a polars frame (what ``map_batch`` runs); keeps ``__sluice_row``/``__row``."""
    import polars as pl

    c = pl.col
    gross = c("price") * c("qty")
    lat, lon = c("lat").radians(), c("lon").radians()
    a = ((lat - HQ_LAT) / 2).sin() ** 2 + lat.cos() * _HQ_COS * ((lon - HQ_LON) / 2).sin() ** 2
    when = pl.from_epoch("ts", "ms")
    hidden = [name for name in df.columns if name in ("__sluice_row", "__row")]
    return (
        df.with_columns(
            gross=gross, net=gross * (1.0 - c("discount")), dist_km=2 * EARTH_KM * a.sqrt().arcsin()
        )
        .with_columns(total=c("net") * (1.0 + c("tax")))
        .filter(c("total") > 100)
        .select(
            "id",
            *hidden,
            user=c("user")
            .str.strip_chars()
            .str.to_lowercase()
            .str.replace_all(SLUG.pattern, "-")
            .str.strip_chars("-"),
            country=c("country").str.strip_chars().str.to_uppercase(),
            tier=pl.when(c("total") > 400).then(pl.lit("gold")).otherwise(pl.lit("silver")),
            gross=c("gross"),
            net=c("net"),
            total=c("total"),
            unit=c("total") / c("qty"),
            dist_km=c("dist_km"),
            hour=when.dt.hour().cast(pl.Int64),
            weekday=(when.dt.weekday() - 1).cast(pl.Int64),
            score=0.6 * c("total").log1p() + 0.004 * c("dist_km") - 0.5 * c("discount"),
            z=(c("price") - 54.86) / 28.8,
        )
    )


def expected_ids(records: int) -> set[int]:
    return {i for i in range(records) if keep(clean(make_order(i)))}


def _same(want: dict[str, Any], got: dict[str, Any]) -> bool:
    if list(got) != list(FIELDS):
        return False
    for name, w in want.items():
        g = got[name]
        if isinstance(w, float):
            if not isinstance(g, int | float) or not math.isclose(w, g, rel_tol=1e-9, abs_tol=1e-9):
                return False
        elif g != w or type(g) is not type(w):
            return False
    return True


def verify_heavy(topic: str, partitions: int, expected: set[int], brokers: str = BROKERS) -> Verdict:
    """Read ``topic`` back: every record must equal ``clean`` of its input, each kept id exactly once."""
    seen: set[int] = set()
    count = duplicates = malformed = 0
    for msg in read_topic(topic, partitions, brokers):
        count += 1
        try:
            value = orjson.loads(msg.value())
            ident = value["id"]
            if not _same(clean(make_order(ident)), value):
                malformed += 1
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            malformed += 1
            continue
        if ident in seen:
            duplicates += 1
        else:
            seen.add(ident)
    return Verdict(
        records=count,
        expected=len(expected),
        unique_ids=len(seen),
        duplicates=duplicates,
        missing=len(expected - seen),
        unexpected=len(seen - expected),
        malformed=malformed,
    )
