"""`python -m mlops_cli`: the same as the `mlops` console script."""
from __future__ import annotations

import sys

from mlops_cli.main import main

sys.exit(main())
