"""The pure core: the data contracts (records, envelope, snapshot, change event), the
transition state machine and the track fold, normalising, codecs, time, errors and secrets.
No I/O and no settings: everything here is a function of its arguments.
"""
