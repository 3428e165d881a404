"""The benchmark scripts are not installed: import them from the repository root, as `python -m benchmarks...`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
