"""``python -m CondNetLogic`` runs the ``condnet`` command line."""
import sys

from .cli import main

sys.exit(main())
