"""The `thinkmesh` command: every subcommand lives in this room, one module per group, and drives the rooms below.

`main` (services/cli/main.py) builds the parser; each module here adds its subcommands with `register`. They
import nothing heavy at the top, so `thinkmesh --help` stays fast in every image.
"""

from services.cli.main import main

__all__ = ["main"]
