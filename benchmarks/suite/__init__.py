"""The benchmark suite: sluice against the systems users would pick instead, in one run.

``python -m benchmarks.bench`` (``make bench``; ``make bench-smoke`` with tiny inputs)
runs every scenario of ``scenarios`` with every contender of ``contenders`` that can
run it, checks every output, and writes ``benchmarks/results/<date>.{json,md}`` and
one chart per scenario.
"""
