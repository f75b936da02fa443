"""What the test suite shares, in one place; ``tests/conftest.py`` loads its fixtures.

- :mod:`tests.support.clocks`: hand-moved clocks (``FakeClock``; ``SimClock`` for the simulator).
- :mod:`tests.support.sinks`: ``CaptureSink``, the poller's publisher that keeps what it is given.
- :mod:`tests.support.kafka`: the real-broker harness (topics, records, a worker subprocess, the
  consumer group's committed offsets and the wait until they reach the topic ends).
- :mod:`tests.support.processes`: ``batchscope`` subprocesses and free ports.
- :mod:`tests.support.workload`: raw envelopes, snapshots and records of a simulated fleet.
- :mod:`tests.support.fixtures`: the pytest fixtures (``kafka_bootstrap``, ``topic_prefix``).

Tests never import ``bench``; the benchmarks may import from here.
"""
