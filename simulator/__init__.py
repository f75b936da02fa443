"""The simulator: a synthetic fleet behind every provider's batch API, in accelerated time.

Test and demo tooling: the product imports it only for ``batchscope simulate`` and the demo of
``batchscope run`` (no source configured).
"""
