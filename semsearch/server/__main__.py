"""`python -m semsearch.server ARGS` runs `semsearch serve ARGS`, with the CLI's error handling."""
import sys

from ..cli import cli
from .command import serve

if "serve" not in cli.commands:
    cli.add_command(serve)
cli(["serve", *sys.argv[1:]], prog_name="semsearch")
