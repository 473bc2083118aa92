"""``python -m seesaw.cli``: the ``seesaw`` command."""

from seesaw.cli import main

main()
