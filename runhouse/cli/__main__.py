"""``python -m runhouse.cli``: the same as the ``runhouse`` command."""

from runhouse.cli import main

main()
