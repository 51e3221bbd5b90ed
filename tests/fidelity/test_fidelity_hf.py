"""hfconfig + params + flops against the real Hugging Face model code.

Optional (needs torch and transformers, tests/fidelity/requirements.txt; run with
`pytest -m fidelity tests/fidelity/test_fidelity_hf.py`, or scripts/fidelity.sh). For every
config.json in tests/data/hf/:

- parameters: ``AutoModelForCausalLM.from_config(cfg)`` built on the meta device (no memory);
  ``sum(p.numel() for p in model.parameters())`` (a tied head is one Parameter, counted once)
  must equal llmcalc's total, and each component (by module name) its row;
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward and one forward+backward
  of batch 1 x seq 128 (eager attention, eager experts) against ``flops_breakdown(...,
  attention="full")`` forward and total. FlopCounterMode counts matmul-like ops only (mm, bmm,
  addmm, sdpa), as llmcalc does. Dense models run on the meta device at full size. Models whose
  forward needs real values (MoE routing; ERNIE/SmolLM3 read a tensor with .item()) run on the
  CPU with zero weights (FLOPs do not depend on values; each token still routes to exactly
  top-k experts) and at most 2 layers (SHRINK); llmcalc gets the same shrunken config.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from llmcalc import flops, hfconfig, params
from tests.test_hfconfig import REMOTE_CODE, TRANSFORMERS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

pytestmark = pytest.mark.fidelity
transformers.logging.set_verbosity_error()

DATA = Path(__file__).parent.parent / "data" / "hf"
STEMS = sorted(p.stem for p in DATA.glob("*.json") if p.stem not in REMOTE_CODE)
SEQ = 128
# Config edits for the CPU runs (memory: weights + grads in fp32 under ~16 GB). Every other CPU
# run keeps at most 2 layers; FLOPs are per layer, so the comparison is unchanged in kind.
SHRINK = {"mixtral-8x7b-v0.1": {"num_hidden_layers": 1},
          "deepseek-v3": {"num_hidden_layers": 1, "first_k_dense_replace": 0, "n_routed_experts": 16}}
# The FLOP error allowed, (llmcalc - torch) / torch; every other config must match exactly.
FLOP_TOLERANCE: dict[str, float] = {}  # every shipped config matches FlopCounterMode exactly
RESULTS: dict[str, str] = {}


def _config(stem: str) -> dict:
    return json.loads((DATA / f"{stem}.json").read_text())


def _spec(cfg: dict, stem: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hfconfig.HFConfigWarning)
        return hfconfig.from_config(cfg, stem)


def _build(cfg: dict, device: str):
    cfg = {k: v for k, v in cfg.items() if k not in ("auto_map", "quantization_config")}
    conf = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device(device):
        return transformers.AutoModelForCausalLM.from_config(
            conf, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32)


def _component(name: str) -> str:
    """llmcalc's row for a transformers parameter name."""
    if re.search(r"(norm|ln_|layernorm)", name):
        return "norm"
    if name.startswith(("lm_head", "embed_out")):
        return "lm_head"
    if re.search(r"(embed|wte|wpe|word_embeddings|project_in|project_out)", name):
        return "embedding"
    if re.search(r"(attn|attention)", name):
        return "attention"
    return "mlp"


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter and capture and RESULTS:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\nhfconfig fidelity, (llmcalc - torch) / torch:")
            for key in sorted(RESULTS):
                reporter.write_line(f"  {key:36s} {RESULTS[key]}")


@pytest.mark.parametrize("stem", STEMS)
def test_parameters_match_transformers(stem):
    cfg = _config(stem)
    model = _build(cfg, "meta")
    real = {k: 0 for k in ("embedding", "attention", "mlp", "norm", "lm_head")}
    for name, p in model.named_parameters():
        real[_component(name)] += p.numel()
    total = sum(p.numel() for p in model.parameters())
    assert total == sum(real.values())
    assert (total, real) == TRANSFORMERS[stem]  # the numbers pinned in tests/test_hfconfig.py
    rows = params.count(_spec(cfg, stem))
    RESULTS[f"params {stem}"] = f"{(rows['total'] - total) / total:+.4%}"
    assert rows["total"] == total
    assert {k: rows[k] for k in real} == real


def _count(model, ids) -> tuple[int, int]:
    with FlopCounterMode(display=False) as forward:
        model(input_ids=ids)
    with FlopCounterMode(display=False) as step:
        model(input_ids=ids).logits.float().sum().backward()
    return forward.get_total_flops(), step.get_total_flops()


@pytest.mark.parametrize("stem", STEMS)
def test_flops_match_flop_counter(stem):
    cfg = _config(stem)
    try:  # full size, no memory: works wherever the forward never reads a value
        if _spec(cfg, stem).is_moe:
            raise NotImplementedError("MoE routing needs real values")
        model = _build(cfg, "meta")
        torch_fwd, torch_total = _count(model, torch.zeros(1, SEQ, dtype=torch.long, device="meta"))
        where = "meta, full size"
    except (NotImplementedError, RuntimeError):
        cfg = {**cfg, **SHRINK.get(stem, {"num_hidden_layers": min(2, cfg["num_hidden_layers"])})}
        cfg.pop("layer_types", None)
        if "first_k_dense_replace" in cfg:
            cfg["first_k_dense_replace"] = min(cfg["first_k_dense_replace"], cfg["num_hidden_layers"] - 1)
        model = _build(cfg, "meta").to_empty(device="cpu")
        with torch.no_grad():  # zeros: every token still picks exactly top-k experts (ties), and
            for tensor in [*model.parameters(), *model.buffers()]:  # the backward only visits those
                tensor.zero_()
        torch_fwd, torch_total = _count(model, torch.zeros(1, SEQ, dtype=torch.long))
        where = f"cpu, {cfg['num_hidden_layers']} layers"
    b = flops.flops_breakdown(_spec(cfg, stem), flops.FlopsSettings(seq=SEQ, batch=1, attention="full"))
    fwd_err = (b.value("forward") - torch_fwd) / torch_fwd
    total_err = (b.value("total") - torch_total) / torch_total
    RESULTS[f"flops {stem}"] = f"forward {fwd_err:+.4%}, fwd+bwd {total_err:+.4%} ({where})"
    tolerance = FLOP_TOLERANCE.get(stem, 0)
    assert abs(fwd_err) <= tolerance and abs(total_err) <= tolerance
