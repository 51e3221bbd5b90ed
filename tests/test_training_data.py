"""The published training layouts kept for `plan` (issue 14; tests/data/training_layouts.yaml):
every entry sourced, and every complete layout multiplying out to its GPU count."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

ENTRIES = yaml.safe_load((Path(__file__).parent / "data" / "training_layouts.yaml").read_text())
FULL = [e for e in ENTRIES if e["completeness"] == "full"]


def test_every_entry_names_its_source():
    assert len({e["id"] for e in ENTRIES}) == len(ENTRIES) >= 300
    assert all(e["source"].startswith("https://") and e["where"] for e in ENTRIES)


@pytest.mark.parametrize("entry", FULL, ids=[e["id"] for e in FULL])
def test_a_complete_layout_multiplies_out_to_its_gpus(entry):
    """TP x PP x CP (x DP where stated) is the GPU count, or divides it (DP left to the reader)."""
    layout = entry["layout"]
    model_parallel = math.prod(layout.get(k) or 1 for k in ("tp", "pp", "cp"))
    if layout.get("dp"):
        assert model_parallel * layout["dp"] == entry["gpus"]
    else:
        assert entry["gpus"] % model_parallel == 0
