"""``python -m commentflow``: the same as the ``commentflow`` command."""

import sys

from commentflow.cli import main

sys.exit(main())
