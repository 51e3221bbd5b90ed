"""Utilisation of a measured run (MFU, HFU) and roofline latency bounds (TTFT, TPOT).

MFU (PaLM, Chowdhery et al. 2022, App. B) = achieved model FLOP/s / peak FLOP/s, with model
FLOPs per token 6N + 12·L·H·Q·T; HFU counts the FLOPs the hardware really ran, recomputation
included (llm-foundry: HFU = MFU x 4/3 under full activation checkpointing).
"""

from __future__ import annotations

from dataclasses import dataclass

from .breakdown import Breakdown, Rows
from .flops import flops_breakdown
from .spec import GPUSpec, ModelSpec, SpecError


@dataclass(frozen=True)
class Measurement:
    """What a run measured; exactly one of the three rates must be given.

    step_time: seconds per optimizer step of batch x grad_accum sequences (whole job);
    tokens_per_s: tokens per second, of the whole job unless per_gpu;
    gpu_hours with tokens: a whole training run (Llama 3: 15T tokens in 6.4M H100-hours).
    """

    step_time: float | None = None
    tokens_per_s: float | None = None
    per_gpu: bool = False
    gpu_hours: float | None = None
    tokens: float | None = None  # the run's token budget (needed with gpu_hours)

    def __post_init__(self) -> None:
        given = [k for k in ("step_time", "tokens_per_s", "gpu_hours") if getattr(self, k) is not None]
        if len(given) != 1:
            raise SpecError("give exactly one of --step-time, --tokens-per-s or --gpu-hours "
                            f"(got {', '.join('--' + g.replace('_', '-') for g in given) or 'none'})")
        for key in given + (["tokens"] if self.tokens is not None else []):
            if getattr(self, key) <= 0:
                raise SpecError(f"--{key.replace('_', '-')} must be positive")
        if self.gpu_hours is not None and self.tokens is None:
            raise SpecError("--gpu-hours needs --tokens (how many tokens those hours trained)")


def mfu_breakdown(m: ModelSpec, gpu: GPUSpec, run: Measurement, seq: int, batch: int = 1,
                  grad_accum: int = 1, gpus: int = 1, dtype: str = "bf16", formula: str = "palm",
                  attention: str = "full", recompute: str = "none") -> Breakdown:
    """MFU and HFU of a measured run, and the time its token budget takes at that rate."""
    if gpus < 1:
        raise SpecError(f"--gpus must be at least 1, got {gpus}")
    model = flops_breakdown(m, seq, batch, grad_accum, attention, "none", formula)
    hardware = flops_breakdown(m, seq, batch, grad_accum, attention, recompute, formula)
    per_token = model.value("model_flops") / model.summary["tokens_per_step"] if formula == "palm" \
        else model.value("per_token/total")
    hw_per_token = per_token * hardware.value("total") / model.value("total")
    if run.step_time is not None:
        tokens_per_s = model.summary["tokens_per_step"] / run.step_time
    elif run.tokens_per_s is not None:
        tokens_per_s = run.tokens_per_s * (gpus if run.per_gpu else 1)
    else:  # gpu_hours: the whole run's tokens over its GPU-seconds, per GPU
        tokens_per_s = run.tokens / (run.gpu_hours * 3600) * gpus
    peak = gpu.peak(dtype)
    achieved = per_token * tokens_per_s / gpus  # per GPU

    r = Rows("ratio", total=None)
    r.add("model_flops_per_token", per_token, unit="FLOP",
          note="PaLM 6N + 12LHQT" if formula == "palm" else f"{formula} formula, per token")
    r.add("tokens_per_s", tokens_per_s, unit="token/s", note=f"whole job, {gpus} GPU(s)")
    r.add("tokens_per_s_per_gpu", tokens_per_s / gpus, unit="token/s")
    r.add("achieved_flops_per_s", achieved, unit="FLOP/s", note="model FLOP/s per GPU")
    r.add("peak_flops_per_s", peak, unit="FLOP/s", note=f"{gpu.name} dense {dtype}")
    r.add("mfu", achieved / peak, note="achieved / peak")
    r.add("hfu", per_token and achieved / peak * hw_per_token / per_token,
          note=f"with {recompute} recomputation" if recompute != "none" else "no recomputation: = MFU")
    summary = {"mfu": r["mfu"], "hfu": r["hfu"], "achieved_flops_per_s": achieved,
               "tokens_per_s": tokens_per_s}
    units = {"mfu": "ratio", "hfu": "ratio", "achieved_flops_per_s": "FLOP/s", "tokens_per_s": "token/s"}
    if run.tokens is not None:
        summary["train_time"] = run.tokens / tokens_per_s
        summary["train_flops"] = run.tokens * per_token
        units.update(train_time="s", train_flops="FLOP")
    return Breakdown(
        command="mfu", title=f"MFU of {m.name} on {gpus} x {gpu.name}", model=m.name, gpu=gpu.name,
        rows=r.build(), summary=summary, summary_units=units,
        inputs={"seq": seq, "batch": batch, "grad_accum": grad_accum, "gpus": gpus, "dtype": dtype,
                "formula": formula, "attention": attention, "recompute": recompute,
                "step_time": run.step_time, "tokens_per_s": run.tokens_per_s, "per_gpu": run.per_gpu,
                "gpu_hours": run.gpu_hours, "tokens": run.tokens},
        notes=(f"MFU counts {formula} model FLOPs per token; peak is the dense {dtype} datasheet figure",),
    )
