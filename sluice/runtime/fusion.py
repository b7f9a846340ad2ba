"""Operator fusion: a linear chain ``source -> filter/map/key_by ... -> to(topic)`` as one loop.

The executor's general path maps a whole batch through each step in turn: a record
tuple per message, a new list per step, a Python call per record per step. For the
most common pipeline shape this module generates one loop instead, the loop a
careful engineer writes by hand (decode, test, transform, produce, per message),
with the user's functions and the serializers bound as locals.

The loop stops at the first record that raises, anywhere in the chain, and tells
which stage failed and what the record looked like entering it; the executor hands
that record to the failure policy exactly as the general path would (no function is
called again for it, except by the policy's retries) and runs the loop again from
the next message. Order is kept: everything before the failed record is produced
before its outputs, everything after it after.

The source is generated (as :mod:`dataclasses` does) because the stages are known
only when the app is built, and a loop that dispatched on them per record would cost
what fusion saves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MethodType
from typing import Any

import orjson

from sluice.dataflow.steps import Filter, KeyBy, Map, Step
from sluice.serde import deserializer, serializer

__all__ = [
    "DESERIALIZE",
    "CollectLoop",
    "FusedLoop",
    "LoopSpec",
    "Stop",
    "fusable",
    "generate",
    "generate_collect",
]

#: stage number of a failure while decoding the message (steps are numbered from 1)
DESERIALIZE = 0
FUSABLE_STEPS = (Filter, Map, KeyBy)

# Where the loop stopped: (outputs produced, index of the failed message or -1,
# stage, value and key entering that stage, the exception or None).
Stop = tuple[int, int, int, Any, Any, BaseException | None]
FusedLoop = Callable[[Sequence[Any], int, Callable[..., None], Callable[..., None]], Stop]
# Where a collecting loop stopped: (index of the failed message or -1, stage, value and key
# entering that stage, the exception or None).
CollectStop = tuple[int, int, Any, Any, BaseException | None]
CollectLoop = Callable[[Sequence[Any], int, list[Any]], CollectStop]

_JSON_IN = deserializer("json")
_JSON_OUT = serializer("json")


def fusable(step: Step) -> bool:
    """A step the fused loop can run: one value in, at most one out, with a plain function."""
    return type(step) in FUSABLE_STEPS


@dataclass(frozen=True)
class LoopSpec:
    """What the generated loop does, stage by stage."""

    steps: Sequence[Step]
    value_deserializer: Callable[[Any], Any]
    key_deserializer: Callable[[Any], Any] | None
    topic: str
    value_serializer: Callable[[Any], Any] | None
    key_serializer: Callable[[Any], Any] | None


def _stages(
    steps: Sequence[Step],
    value_deserializer: Callable[[Any], Any],
    key_deserializer: Callable[[Any], Any] | None,
    names: dict[str, Any],
) -> list[str]:
    """The loop body's lines that decode message ``m`` and run ``steps`` on it (``v``, ``k``, stage ``s``)."""
    body = ["v = m.value()"]
    if value_deserializer is _JSON_IN:
        names["loads"] = orjson.loads
        body.append("if v is not None: v = loads(v)")
    else:
        names["vdeser"] = value_deserializer
        body.append("v = vdeser(v)")
    if key_deserializer is None:
        body.append("k = m.key()")
    else:
        names["kdeser"] = key_deserializer
        body.append("k = kdeser(m.key())")
    for stage, step in enumerate(steps, start=1):
        fn = f"f{stage}"
        names[fn] = step.fn  # type: ignore[attr-defined]
        body.append(f"s = {stage}")
        if isinstance(step, Filter):
            body.append(f"if not {fn}(v): continue")
        elif isinstance(step, Map):
            body.append(f"v = {fn}(v)")
        elif isinstance(step, KeyBy):
            body.append(f"k = {fn}(v)")
        else:  # pragma: no cover - fusable() admits no other step
            raise TypeError(f"{type(step).__name__} cannot be fused")
    body.append(f"s = {len(steps) + 1}")
    return body


def generate(spec: LoopSpec) -> FusedLoop:
    """The loop ``run(msgs, start, produce, on_delivery) -> Stop`` for ``spec``."""
    names: dict[str, Any] = {"MethodType": MethodType, "topic": spec.topic}
    body = _stages(spec.steps, spec.value_deserializer, spec.key_deserializer, names)
    if spec.value_serializer is None:
        value_out = "v"
    elif spec.value_serializer is _JSON_OUT:
        names["dumps"] = orjson.dumps
        value_out = "None if v is None else dumps(v)"
    else:
        names["vser"] = spec.value_serializer
        value_out = "vser(v)"
    if spec.key_serializer is None:
        key_out = "k"
    else:
        names["kser"] = spec.key_serializer
        key_out = "kser(k)"
    body += [
        "ts = m.timestamp()[1]",
        f"produce(topic, {value_out}, {key_out}, timestamp=ts if ts > 0 else 0,"
        " headers=m.headers(), on_delivery=MethodType(on_delivery, m))",
        "n += 1",
    ]
    loop = "\n".join("            " + line for line in body)
    source = f"""
def run(msgs, start, produce, on_delivery):
    n = s = 0
    i = start
    v = k = None
    try:
        for i in range(start, len(msgs)):
            m = msgs[i]
            s = 0
{loop}
    except Exception as exc:
        return n, i, s, v, k, exc
    return n, -1, 0, None, None, None
"""
    exec(
        compile(source, f"<sluice fused loop to {spec.topic}>", "exec"), names
    )  # generated: see the module doc
    return names["run"]


def generate_collect(
    steps: Sequence[Step],
    value_deserializer: Callable[[Any], Any],
    key_deserializer: Callable[[Any], Any] | None,
) -> CollectLoop:
    """The loop ``run(msgs, start, out) -> CollectStop`` that appends ``(value, key, msg)`` to ``out``.

    The records a stateful step reads (``source -> filter/map/key_by ... -> window``),
    decoded and transformed in one loop instead of a list per step.

    Example:
        >>> from confluent_kafka import Message
        >>> from sluice.dataflow.steps import KeyBy
        >>> run = generate_collect([KeyBy("key_by", lambda e: e["user"])], _JSON_IN, None)
        >>> out = []
        >>> run([Message(value=b'{"user": "ann"}'), Message(value=b"{")], 0, out)[:2]
        (1, 0)
        >>> [(v, k) for v, k, _m in out]
        [({'user': 'ann'}, 'ann')]
    """
    names: dict[str, Any] = {}
    body = [*_stages(steps, value_deserializer, key_deserializer, names), "append((v, k, m))"]
    loop = "\n".join("            " + line for line in body)
    source = f"""
def run(msgs, start, out):
    append = out.append
    s = 0
    i = start
    v = k = None
    try:
        for i in range(start, len(msgs)):
            m = msgs[i]
            s = 0
{loop}
    except Exception as exc:
        return i, s, v, k, exc
    return -1, 0, None, None, None
"""
    exec(
        compile(source, "<sluice fused loop to a stateful step>", "exec"), names
    )  # generated: see the module doc
    return names["run"]
