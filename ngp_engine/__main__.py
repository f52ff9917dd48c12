"""`python -m ngp_engine ...`: see `ngp_engine.cli`."""
import sys

from .cli import main

sys.exit(main())
