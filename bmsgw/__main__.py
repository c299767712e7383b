"""`python -m bmsgw` is the `bmsgw` command."""

import sys

from bmsgw.cli import main

sys.exit(main())
