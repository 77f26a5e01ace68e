"""``python -m minitransformer ...``: the same as the ``minitransformer`` command."""

import sys

from minitransformer.cli import main

sys.exit(main())
