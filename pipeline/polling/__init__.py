"""Polling the providers: the poller, its refresh schedule, retry policy, rate limiter and
breaker, SigV4 signing, the capped HTTP fetch, the Kafka-outage buffer and the poller's metrics.
"""
