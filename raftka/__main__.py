"""`python -m raftka ...` is the `raftka` command."""

import sys

from raftka.client.cli import main

sys.exit(main())
