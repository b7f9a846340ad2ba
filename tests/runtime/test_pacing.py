"""The pacer: chunk sizes that keep a slow batch within max.poll.interval.ms.

The end-to-end proof (a 200 ms-per-record batch on a real broker, processed once, the
member never evicted) is ``tests/runtime/test_reliability.py``, item 4.
"""

from __future__ import annotations

from sluice.runtime.pacing import Pacer


def test_pacer_cuts_slow_batches_to_a_quarter_of_the_poll_interval():
    pacer = Pacer(max_poll_interval=10.0)
    assert pacer.chunk(1000) == 16
    pacer.observe(16, 16 * 0.2)
    assert pacer.chunk(1000) * 0.2 <= 2.5
    pacer.observe(12, 12 * 0.5)  # slower: the estimate rises at once
    assert pacer.chunk(1000) == 5
    assert not pacer.overdue(4.9) and pacer.overdue(5.0)
