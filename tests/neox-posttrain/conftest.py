"""Makes `twins.py` (tiny neox/HF twin models and TRL trainers) importable by the tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
