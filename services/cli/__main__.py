"""`python -m services.cli`: the `thinkmesh` command (the local stack and the tests start services this way)."""

import sys

from services.cli.main import main

sys.exit(main())
