"""The ``batchscope`` command: the top layer, wiring the stages together.
"""
