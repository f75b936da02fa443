"""batchscope: fleet-wide observability for LLM batch jobs."""

__version__ = "0.1.0"
