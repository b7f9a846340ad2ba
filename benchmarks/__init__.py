"""Benchmarks of sluice against the loops people write by hand.

Run ``make bench`` (or ``python -m benchmarks.stateless --records 1000000``);
results land in ``benchmarks/results/``.
"""
