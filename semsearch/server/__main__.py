"""`python -m semsearch.server ARGS` is `semsearch serve ARGS`."""
import sys

from ..cli import cli

cli(["serve", *sys.argv[1:]], prog_name="semsearch")
