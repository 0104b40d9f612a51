"""The model card: a small JSON file in a run directory that says how to rebuild and use its model.

Stages write it (``update``); loading a run reads only it, never the recipe. It holds entry-point names and
arguments, never Python references: a run directory is data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vvframe.core.atomic import atomic_json

CARD_FILE = "card.json"


def update(run_dir: str | Path, **fields: Any) -> None:
    """Set top-level ``fields`` of ``run_dir``'s card (created if missing), atomically; other fields are kept."""
    path = Path(run_dir) / CARD_FILE
    card = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    card.update(fields)
    atomic_json(path, card)
