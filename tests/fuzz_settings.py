"""Hypothesis settings of the fuzz modules (tests/test_fuzz.py, tests/test_fuzz_remotes.py):
profiles of theirs only (not loaded globally, so other tests keep Hypothesis's defaults).

300 examples a property in the test suite proper (``nox -s tests``, the README's command) and
CI; 30 in a bare ``pytest`` run, a developer's quick loop. FUZZ_EXAMPLES overrides both.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    # Hypothesis's caches (Unicode tables, constants) go outside the checkout.
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "incus_images-hypothesis")

#: The suite proper and CI fuzz at full strength (see the module's docstring).
THOROUGH = os.environ.get("FUZZ_THOROUGH") == "1" or os.environ.get("CI") == "true"

settings.register_profile(
    "incus_images.fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300" if THOROUGH else "30")),
    # No example database: the run must not write .hypothesis/ into the checkout.
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("incus_images.fuzz")
#: For properties whose examples include file-system work, certificates or huge bodies.
SLOW = settings(FUZZ, deadline=None)
#: The heavier properties run fewer examples (still about 200 in CI).
FEWER = settings(
    SLOW, max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200" if THOROUGH else "20"))
)
