"""pytest's entry for the whole checkout: where the tests import from, and the shared fixtures.

The tests live by what they need (docs/testing.md#folders): ``tests/unit`` (no checkpoint, no
server), ``tests/model`` (a test checkpoint, in process), ``tests/server`` (a real tritonserver
answering requests), ``tests/operations`` (the launcher, deployment, Hub fetch, docs, benchmarks
and reports) and the client's own tests in ``client/tests``. Their helpers sit in ``tests/`` and
``client/tests/``, their fixtures in ``tests/shared_fixtures.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# The tests import the code of the checkout they live in, whatever the environment's editable
# installs point at (another clone's, for example); the servers they start do too
# (repository.package_source). The product comes first, then the client and the tools.
for folder in ("client/tests", "tests", "tools", "client", "src"):
    sys.path.insert(0, str(ROOT / folder))

pytest_plugins = ["shared_fixtures"]
