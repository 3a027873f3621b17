"""``python -m mlorch`` is the ``mlorch`` command."""

import sys

from mlorch.cli import main

sys.exit(main())
