"""``python -m mefn`` runs the ``mefn`` command."""

import sys

from mefn.cli import main

sys.exit(main())
