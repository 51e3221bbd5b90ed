"""Run tests/fidelity/peak.py's cases on CUDA (torch.cuda.max_memory_allocated) beside the CPU tracker's
cases, so the two can be compared: python scripts/measure_peak_cuda.py OUT.json (needs a GPU, torch,
transformers and peft). Not yet run: the session that wrote it had no GPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "fidelity")]

import torch  # noqa: E402
import transformers  # noqa: E402
from peak import measure  # noqa: E402
from test_peak_memory import CASES  # noqa: E402

out = {"torch": torch.__version__, "transformers": transformers.__version__,
       "device": torch.cuda.get_device_name(0), "cases": []}
for case in CASES:
    out["cases"].append(measure(case, "cuda"))
    print(json.dumps(out["cases"][-1]), flush=True)
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
