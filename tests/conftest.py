"""Settings for every test: Hypothesis without deadlines.

A property test checks results, never time (speed is `make bench`'s job); a
deadline would only make the suite fail when the machine is busy.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("hyperplane", deadline=None)
settings.load_profile("hyperplane")
