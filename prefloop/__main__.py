"""``python -m prefloop`` (and ``accelerate launch -m prefloop …``): the same CLI as ``prefloop``."""

from prefloop.cli import main

main()
