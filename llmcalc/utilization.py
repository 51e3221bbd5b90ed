"""Utilisation of a measured run (MFU, HFU).

MFU (PaLM, Chowdhery et al. 2022, App. B) = achieved model FLOP/s / peak FLOP/s, with model
FLOPs per token 6N + 12·L·H·Q·T; HFU counts the FLOPs the hardware really ran, recomputation
included (llm-foundry: HFU = MFU x 4/3 under full activation checkpointing).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .breakdown import Breakdown, Quantity, Rows
from .flops import FlopsSettings, flops_breakdown
from .spec import ModelSpec, SpecError
from .units import fmt_count

if TYPE_CHECKING:  # annotations only: a GPU lookup loads it
    from .gpuspec import GPUSpec


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
                  grad_accum: int = 1, gpus: int | None = None, dtype: str = "bf16", formula: str = "palm",
                  attention: str = "full", recompute: str = "none") -> Breakdown:
    """MFU and HFU of a measured run, and the time its token budget takes at that rate.

    gpus: the job's GPU count (default 1). GPU-hours fix the per-GPU rate by themselves; the
    whole-job rate and wall-clock time are given only when --gpus says how many GPUs there were.
    """
    known_gpus = gpus is not None
    gpus = 1 if gpus is None else gpus
    if gpus < 1:
        raise SpecError(f"--gpus must be at least 1, got {gpus}")
    settings = FlopsSettings(seq=seq, batch=batch, grad_accum=grad_accum, attention=attention, formula=formula)
    model = flops_breakdown(m, settings)  # model FLOPs: what the model needs, no recomputation
    hardware = flops_breakdown(m, replace(settings, recompute=recompute))  # what the hardware runs
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
    if achieved > peak:  # physically impossible: the measured rate or the GPU count is off
        raise SpecError(f"MFU comes out as {achieved / peak:.3g} (> 1: {achieved:.3g} FLOP/s per GPU above the "
                        f"{peak:.3g} peak); check --step-time/--tokens-per-s, --gpus and --dtype")
    hfu = per_token and achieved / peak * hw_per_token / per_token  # recomputation's FLOPs too: past 1, impossible
    if hfu > 1:
        raise SpecError(f"HFU comes out as {hfu:.3g} (> 1: {recompute} recomputation runs {hw_per_token / per_token:.3g}x "
                        "the model's FLOPs); check --recompute, then --step-time/--tokens-per-s, --gpus and --dtype")

    r = Rows("ratio", total=None)
    step_tokens = model.summary["tokens_per_step"]
    r.add("model_flops_per_token", per_token, unit="FLOP",
          note="PaLM 6N + 12LHQT" if formula == "palm" else f"{formula} formula, per token",
          how=("{} model FLOPs per step / {} tokens", model.value("model_flops" if formula == "palm" else "total"),
               step_tokens))
    whole_job = known_gpus or run.gpu_hours is None
    rate_how = _rate_how(run, step_tokens, gpus)
    if whole_job:
        r.add("tokens_per_s", tokens_per_s, unit="token/s", note=f"whole job, {fmt_count(gpus, 'GPU')}", how=rate_how)
    r.add("tokens_per_s_per_gpu", tokens_per_s / gpus, unit="token/s", how=("({}) / {} GPUs", rate_how, gpus))
    r.add("achieved_flops_per_s", achieved, unit="FLOP/s", note="model FLOP/s per GPU",
          how=("model_flops_per_token x tokens_per_s_per_gpu",))
    named = gpu.peak_label(dtype)
    r.add("peak_flops_per_s", peak, unit="FLOP/s", note=f"{gpu.name} dense {named}", how=("{} datasheet", peak))
    r.add("mfu", achieved / peak, note="achieved / peak", how=("achieved_flops_per_s / peak_flops_per_s",))
    r.add("hfu", hfu, note=f"with {recompute} recomputation" if recompute != "none" else "no recomputation: = MFU",
          how=("mfu x {} hardware FLOPs / {} model FLOPs", hardware.value("total"), model.value("total")))
    summary = {"mfu": Quantity(r["mfu"], "ratio"), "hfu": Quantity(r["hfu"], "ratio"),
               "achieved_flops_per_s": Quantity(achieved, "FLOP/s"),
               "tokens_per_s_per_gpu": Quantity(tokens_per_s / gpus, "token/s")}
    if whole_job:
        summary["tokens_per_s"] = Quantity(tokens_per_s, "token/s")
    if run.tokens is not None:
        summary["train_flops"] = Quantity(run.tokens * per_token, "FLOP")
        if whole_job:
            summary["train_time"] = Quantity(run.tokens / tokens_per_s, "s")  # wall clock on these GPUs
    return Breakdown(
        command="mfu", title=f"MFU of {m.name} on {f'{gpus} x ' if known_gpus else ''}{gpu.name}",
        model=m.name, gpu=gpu.name,
        rows=r.build(), summary=summary,
        inputs={"seq": seq, "batch": batch, "grad_accum": grad_accum, "gpus": gpus if known_gpus else None,
                "dtype": dtype,
                "formula": formula, "attention": attention, "recompute": recompute,
                "step_time": Quantity(run.step_time, "s"), "tokens_per_s": Quantity(run.tokens_per_s, "token/s"),
                "per_gpu": run.per_gpu, "gpu_hours": run.gpu_hours, "tokens": run.tokens},
        notes=(f"MFU counts {formula} model FLOPs per token; peak is the dense {named} datasheet figure",
               *_above_matmuls(gpu, dtype, hfu)),
    )


def _above_matmuls(gpu: GPUSpec, dtype: str, hfu: float) -> tuple[str, ...]:
    """A run whose hardware FLOPs outpace the GPU's best-shape matmul (its measured MAMF share): possible only where
    the count is off, so said (a model's FLOPs are nearly all matmuls, and none runs faster than the best one)."""
    best = gpu.matmul_share(dtype)
    if best is None or hfu <= best:
        return ()
    return (f"HFU {hfu:.0%} is above the {best:.0%} of the {dtype} peak that {gpu.name}'s best-shape matmul reaches "
            "(measured MAMF): check the measurement, --gpus, --dtype and --recompute",)


def _rate_how(run, step_tokens: int, gpus: int) -> tuple:
    """The whole job's tokens/s as a formula, from whichever measurement was given."""
    if run.step_time is not None:
        return ("{} tokens / {} s step", step_tokens, run.step_time)
    if run.tokens_per_s is not None:
        return ("{} tokens/s" + (" x {} GPUs" if run.per_gpu else ""), run.tokens_per_s, gpus)
    return ("{} tokens / ({} GPU-hours x 3600 s) x {} GPUs", run.tokens, run.gpu_hours, gpus)
