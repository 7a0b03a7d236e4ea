"""``python -m composition_gym.agents.diagnostics MODEL …`` (same as ``compgym diagnose``)."""

import sys

from composition_gym.agents.diagnostics.cli import main

sys.exit(main())
