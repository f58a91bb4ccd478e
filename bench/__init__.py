"""Benchmark suite for the runhouse daemon: ``python bench/run.py [--quick]``.

One module per concern: :mod:`bench.servers` starts and stops every process under test,
:mod:`bench.rawhttp` is the keep-alive client shared by all servers, and :mod:`bench.latency`,
:mod:`bench.throughput`, :mod:`bench.startup`, :mod:`bench.transfer` and :mod:`bench.memory`
measure one thing each. :mod:`bench.report` turns the numbers into the table and PASS/MISS lines.
"""
