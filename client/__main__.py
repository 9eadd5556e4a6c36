"""`python -m client ...` is the `raftka` command."""

import sys

from client.cli import main

sys.exit(main())
