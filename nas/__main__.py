"""`python -m nas`: the `nas` command (what torchrun starts for data-parallel runs)."""

import sys

from nas.cli.main import main

sys.exit(main())
