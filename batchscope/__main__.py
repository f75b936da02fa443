"""``python -m batchscope``: the ``batchscope`` command."""

from batchscope.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
