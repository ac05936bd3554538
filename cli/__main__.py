"""`python -m cli`: the same as the `feedserve` command."""

import sys

from cli.main import main

sys.exit(main())
