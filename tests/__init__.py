"""The test suite; its long runs are modules here too (``python -m tests.faults``,
``python -m tests.load``), run from the repository's root."""

import sys
from pathlib import Path

# The tools the tests stand on (throwaway_incusd, tiny_image, ...) live in scripts/, which
# pytest puts on the path (pyproject's pythonpath); ``python -m tests.<module>`` needs it too.
_SCRIPTS = str(Path(__file__).resolve().parent.parent / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.append(_SCRIPTS)
