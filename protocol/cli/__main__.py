"""``python -m protocol.cli``: the ``secagg`` command."""

import sys

from . import main

sys.exit(main())
