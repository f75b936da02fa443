"""The webhook receiver (receiver.py): signed provider events in, hints to ``<prefix>.hints`` out."""
