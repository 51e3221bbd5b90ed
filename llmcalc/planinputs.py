"""What `plan` is asked: the training target (Target) and the constraints on its search (Constraints), each
checked as it is built, so that a user's impossible value is a one-line SpecError before any search."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .flops import RECOMPUTE
from .dtypes import DTYPE_TABLE
from .kernels import ATTENTION_KERNELS, attention_efficiency, attention_kernel, matmul_efficiency
from .exposure import BACKWARD_PREFETCH
from .memory.fp8 import RECIPES as FP8_RECIPES, check_gpu, params_refusal, tn_only
from .memory.frameworks import LOSSES
from .memory.recompute import DEFAULT_RECOMPUTE_MODULES, check_module_names
from .memory.settings import ZERO_STAGES
from .spec import ModelSpec, SpecError, check_choice
from .steptime import EXPERT_OVERHEAD, GRAD_BYTES, UB_SMS, Links

SEARCHED_ZERO = (0, 1, 3)  # ZeRO-2 moves ZeRO-1's bytes and saves less than ZeRO-3: asked for, not searched
DEFAULT_FP8_RECIPE = "delayed"  # Megatron's --fp8-recipe default
MAX_GPUS = 1 << 24  # 16.8 million: past any cluster, and where enumerating a count's divisors stays instant


@dataclass(frozen=True)
class Target:
    """What to train: ``global_batch`` sequences of ``seq`` tokens per step, ``tokens`` in all."""

    gpus: int
    seq: int
    global_batch: int
    tokens: float | None = None
    dtype: str = "bf16"

    def __post_init__(self) -> None:
        for key in ("gpus", "seq", "global_batch"):
            if getattr(self, key) < 1:
                raise SpecError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        if self.gpus > MAX_GPUS:
            raise SpecError(f"--gpus {self.gpus:,} is more than any cluster ({MAX_GPUS:,} at most)")
        if self.tokens is not None and self.tokens <= 0:
            raise SpecError(f"--tokens must be positive, got {self.tokens:g}")


@dataclass(frozen=True)
class Constraints:
    """Degrees fixed by the user (None: searched) and the sets the search may use."""

    tp: int | None = None
    pp: int | None = None
    cp: int | None = None
    ep: int | None = None
    etp: int | None = None  # None: searched, TP's or 1 (Megatron-Core's MoE parallel folding)
    dp: int | None = None
    vpp: int | None = None  # above 1: interleaved pipelines only, unless unpipelined or pp is fixed at 1 (then moot)
    micro_batch: int | None = None
    max_tp: int | None = None  # default: one node
    recompute: tuple[str, ...] = RECOMPUTE  # also "none,full", or one choice: read by choices()
    recompute_modules: tuple[str, ...] = DEFAULT_RECOMPUTE_MODULES  # what "selective" rebuilds (memory.settings)
    zero: tuple[int, ...] = SEARCHED_ZERO  # also "0,1,3" or 3
    sp: bool | None = None  # None: with TP
    tp_overlap: bool = False
    tp_async: bool = True  # the backward's TP collectives under the weight gradients (tpcomm.py; Megatron since 2021-09)
    ep_overlap: bool = False  # Megatron-Core's overlap_moe_expert_parallel_comm (core 0.14+; off by default)
    pp_overlap: bool = True  # Megatron's overlap_p2p_comm, on by default since 2023-10 (interleaved schedule)
    dp_overlap: bool = True  # Megatron's --overlap-grad-reduce / --overlap-param-gather (2023-08 on)
    backward_prefetch: str = "pre"  # ZeRO-3/FSDP: the next unit's all-gather before (pre) or after (post) a gradient
    attention_kernel: str = "auto"  # kernels.ATTENTION_KERNELS; auto: what Transformer Engine runs on the GPU
    gpu_util: float = 1.0
    loss: str | None = None  # the cross-entropy's implementation (memory/loss.py); None: the framework's
    grad_reduce: str = "fp32"  # the gradients' dtype, kept and reduced (steptime.GRAD_BYTES)
    fp8_recipe: str | None = None  # under --dtype fp8: Transformer Engine's scaling recipe (memory/fp8.py; delayed)
    fp8_params: bool = False  # under --dtype fp8: FP8 parameters, gathered in 1 byte
    expert_overhead: float = EXPERT_OVERHEAD  # an MoE layer's fixed work per routed expert a GPU holds (steptime)
    tp_overlap_sms: int = UB_SMS  # with tp_overlap: SMs TE's userbuffers kernels hold (steptime.Links.ub_sms)
    # layers whose saved activations wait in host memory (Megatron-Core's cpu_offloading_num_layers: one pipeline stage,
    # no recomputation; dense models without CP, as modelled): None the fewest that fit a layout that does not fit
    # without (where the GPU's host link is known); 0 none; n fixed
    offload: int | None = None
    # with a fixed vpp, the layouts without a pipeline too (vpp 1 there): a recipe's stated vpp applied where a
    # pipeline is, as the published-run survey asks it (tests/plan_questions.py); the CLI's --vpp leaves them out
    unpipelined: bool = False

    def stages(self, dtype: str, pp: int | None = None) -> list[int]:
        """The ZeRO stages searched for a pipeline of ``pp`` (None: the fixed --pp, else 1): FSDP (ZeRO-3) shards
        whole models, not pipeline stages; FP8 parameters rule out what memory/fp8.params_refusal says."""
        fp8_params = self.fp8_params and dtype == "fp8"
        return [z for z in self.zero if not (z == 3 and (pp or self.pp or 1) > 1)
                and not (fp8_params and params_refusal(self.recipe, z))]

    def zero3(self, dtype: str, pp: int | None = None) -> bool:
        """Whether ZeRO-3 (FSDP) is searched for a pipeline of ``pp`` (Constraints.stages)."""
        return 3 in self.stages(dtype, pp)

    @property
    def recipe(self) -> str:
        """The FP8 recipe a --dtype fp8 target runs: the one given, else Megatron's default."""
        return self.fp8_recipe or DEFAULT_FP8_RECIPE

    def __post_init__(self) -> None:
        self._check_degrees()
        self._check_offload()
        object.__setattr__(self, "recompute", choices(self.recompute, str, "--recompute"))
        object.__setattr__(self, "zero", choices(self.zero, int, "--zero"))
        object.__setattr__(self, "recompute_modules", choices(self.recompute_modules, str, "--recompute-modules"))
        check_module_names(self.recompute_modules)
        for r in self.recompute:
            check_choice("--recompute", r, RECOMPUTE)
        for z in self.zero:
            check_choice("--zero", z, ZERO_STAGES)
        check_choice("--attention-kernel", self.attention_kernel, ATTENTION_KERNELS)
        if self.attention_kernel == "unfused" and (self.cp or 1) > 1:
            raise SpecError(f"--cp {self.cp} needs a fused attention kernel: Megatron-Core's context-parallel ring "
                            "runs inside Transformer Engine's (drop --attention-kernel unfused, or --cp)")
        check_choice("--grad-reduce", self.grad_reduce, tuple(GRAD_BYTES))
        check_choice("--backward-prefetch", self.backward_prefetch, BACKWARD_PREFETCH)
        if self.loss is not None:
            check_choice("--loss", self.loss, LOSSES)
        if self.fp8_recipe is not None:
            check_choice("--fp8-recipe", self.fp8_recipe, FP8_RECIPES)
        if not self.recompute or not self.zero:
            raise SpecError("--recompute and --zero each need at least one choice")
        if not 0 < self.gpu_util <= 1:
            raise SpecError(f"--gpu-util must be in (0, 1], got {self.gpu_util}")
        if type(self.expert_overhead) not in (int, float) or not 0 <= self.expert_overhead < 1:  # not bool, not None
            raise SpecError(f"--expert-overhead must be a duration below 1 s (0.4ms), got {self.expert_overhead!r}")
        if type(self.tp_overlap_sms) is not int or not 0 <= self.tp_overlap_sms <= 64:
            raise SpecError(f"--tp-overlap-sms is a whole number of SMs, 0 to 64 (TE's default 16), got "
                            f"{self.tp_overlap_sms!r}")

    def _check_degrees(self) -> None:
        for key in ("tp", "pp", "cp", "ep", "etp", "dp", "vpp", "micro_batch", "max_tp"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise SpecError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
        if self.tp and self.max_tp and self.tp > self.max_tp:
            raise SpecError(f"--tp {self.tp} is above --max-tp {self.max_tp}: give one of them")

    def offload_rules_out(self, pp: int, cp: int) -> bool:
        """Whether a fixed offload count rules out these degrees: it runs on one stage without context parallelism."""
        return bool(self.offload) and (pp > 1 or cp > 1)

    def _check_offload(self) -> None:
        """A fixed offload count goes with what Megatron runs it beside: one pipeline stage, no recomputation
        (core 0.15 TransformerConfig refuses cpu_offloading with either)."""
        n = self.offload
        if n is None or n == 0:
            return
        if type(n) is not int or n < 0:
            raise SpecError(f"--offload-layers takes a number of layers (or auto), got {n!r}")
        for flag, value in (("--pp", self.pp), ("--vpp", self.vpp)):
            if (value or 1) > 1:
                raise SpecError(f"--offload-layers {n} runs on one pipeline stage (Megatron refuses CPU offloading "
                                f"with pipeline parallelism): drop {flag} {value} or --offload-layers")
        if (self.cp or 1) > 1:
            raise SpecError(f"--offload-layers {n} with --cp {self.cp} is not modelled (Transformer Engine offloads "
                            "no context-parallel attention tensors): drop one")
        if self.attention_kernel == "unfused":
            raise SpecError(f"--offload-layers {n} with --attention-kernel unfused is not modelled (Transformer "
                            "Engine's unfused attention marks none of its tensors for offloading): drop one")
        if "none" not in choices(self.recompute, str, "--recompute"):
            raise SpecError(f"--offload-layers {n} runs without recomputation (Megatron refuses CPU offloading beside "
                            "it): add none to --recompute, or drop --offload-layers")


def choices(value, kind: type, flag: str) -> tuple:
    """The choices a search may use, from the CLI's "none,full" or "0,1,3", or the API's 3 or a sequence."""
    items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, (int, str)) else value
    try:
        return tuple(kind(str(x).strip()) for x in items if str(x).strip())
    except ValueError:
        raise SpecError(f"{flag} takes a comma list of choices, got {value!r}") from None


def offloading(m: ModelSpec, gpu, c: Constraints) -> bool:
    """Whether the search may offload activations (the fewest layers that fit, Planner.offloaded): where the GPU
    preset gives its host link and host memory, --offload-layers leaves it to the search and the constraints leave
    room for it (one stage, no CP and no recomputation possible). Transformer Engine 2.8 offloads only the tensors its
    modules mark (mark_activation_offload), and neither its grouped experts' GEMMs, its context-parallel attention
    nor its unfused attention mark theirs, while the memory model moves whole layers: those are left out. A fixed
    count is refused where it cannot run or is not modelled."""
    if c.offload:
        if not gpu.host_bandwidth:
            raise SpecError(f"--offload-layers {c.offload}: {gpu.name} has no host link figure to time the copies by "
                            "(give host_gb_s in a GPU YAML, --gpu my-gpu.yaml)")
        if c.offload >= m.num_hidden_layers:
            raise SpecError(f"--offload-layers {c.offload} must be below the model's {m.num_hidden_layers} layers "
                            "(Megatron offloads fewer than all)")
        if m.is_moe:
            raise SpecError(f"--offload-layers with {m.name}'s routed experts is not modelled (Transformer Engine "
                            "keeps its grouped experts' saved tensors on the GPU): drop --offload-layers")
    return c.offload is None and bool(gpu.host_bandwidth and gpu.host_memory_bytes) and not m.is_moe \
        and (c.pp or 1) == 1 and (c.cp or 1) == 1 and "none" in c.recompute and c.attention_kernel != "unfused"


def offload_count(value) -> int | None:
    """--offload-layers (CLI) or offload_layers (API): "auto" or None (searched), or a whole number of layers."""
    if value is None or isinstance(value, str) and value.strip().lower() == "auto":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]+", text):
        raise SpecError(f"--offload-layers takes a number of layers or auto, got {value!r}")
    return int(text)


def fp8_settings(gpu, t: Target, c: Constraints) -> dict:
    """The memory model's FP8 settings for the target (memory/fp8.py); refuses what TE cannot run."""
    if t.dtype != "fp8":
        if c.fp8_params or c.fp8_recipe:
            raise SpecError(f"{'--fp8-params' if c.fp8_params else '--fp8-recipe'} needs --dtype fp8")
        return {}
    refused = [why for z in c.zero if (why := params_refusal(c.recipe, z))] if c.fp8_params else []
    if refused and len(refused) == len(c.zero):  # every stage asked for rules FP8 parameters out
        raise SpecError(refused[0])
    check_gpu(c.recipe, gpu.name, gpu.compute_capability)
    return dict(fp8=c.recipe, fp8_params=c.fp8_params, fp8_transposes=tn_only(gpu.compute_capability))


def fixed_flags(c: Constraints) -> list[str]:
    """The options that narrow the search, as typed: fixed degrees, the micro-batch, offloading, ZeRO stages."""
    flags = {"offload": "offload-layers"}
    fixed = [f"--{flags.get(k, k.replace('_', '-'))} {getattr(c, k)}"
             for k in ("tp", "pp", "cp", "ep", "etp", "dp", "vpp", "micro_batch", "max_tp", "offload")
             if getattr(c, k) or k == "offload" and c.offload == 0]  # --offload-layers 0 rules offloading out
    return fixed + ([f"--zero {','.join(map(str, c.zero))}"] if c.zero != SEARCHED_ZERO else []) + \
        ([f"--recompute {','.join(c.recompute)}"] if set(c.recompute) != set(RECOMPUTE) else [])


def _mismatch(m: ModelSpec, t: Target, c: Constraints) -> str | None:
    """A fixed degree or micro-batch that cannot divide what it splits, by itself."""
    if c.tp and m.num_attention_heads % c.tp:
        return f"--tp {c.tp} must divide {m.name}'s {m.num_attention_heads} attention heads"
    product = (c.tp or 1) * (c.pp or 1) * (c.cp or 1)
    if t.gpus % product:
        return (f"TP x PP x CP fixed at {product} (" + " x ".join(f"--{k} {getattr(c, k)}" for k in ("tp", "pp", "cp")
                                                        if getattr(c, k)) + f") does not divide {t.gpus:,} GPUs")
    if c.micro_batch and t.global_batch % c.micro_batch:
        return f"--micro-batch {c.micro_batch} does not divide the {t.global_batch:,}-sequence batch"
    if (c.vpp or 1) > 1 and (c.pp or 2) * c.vpp > m.num_hidden_layers:  # plan._vpps: a layer a virtual stage
        return (f"--vpp {c.vpp} gives {(c.pp or 2) * c.vpp} virtual stages" + (f" over --pp {c.pp}" if c.pp else
                                                                               " on the shortest pipeline, 2")
                + f", more than {m.name}'s {m.num_hidden_layers} layers (each holds one at least)")
    return None


def impossible(m: ModelSpec, t: Target, c: Constraints) -> str:
    """Why no layout multiplies out: a fixed degree the model or the ZeRO stages rule out, else the count, the
    batch, the model's shape and the degrees fixed."""
    if (c.ep or 1) > 1 and not m.is_moe:
        return f"{m.name} is dense: --ep {c.ep} needs routed experts to split (drop --ep)"
    if (c.ep or 1) > 1 and m.num_experts % c.ep:
        return (f"--ep {c.ep} must divide {m.name}'s {m.num_experts} routed experts (each GPU holds a whole share): "
                f"try --ep {max(e for e in range(1, c.ep) if m.num_experts % e == 0)}")
    if c.zero == (3,) and not c.zero3(t.dtype):
        return ("--zero 3 (FSDP) shards whole models: not pipeline stages (--pp above 1) nor MXFP8 parameters; "
                "add --zero 1 or drop what rules it out")
    mismatch = _mismatch(m, t, c)
    if mismatch:
        return mismatch
    fixed = fixed_flags(replace(c, offload=c.offload or None))  # offloading ruled out bears on no layout's degrees
    shape = f"{m.num_hidden_layers} layers, {m.num_attention_heads} heads, {m.kv_heads} KV heads" + \
        (f", {m.num_experts} experts" if m.is_moe else "")
    return (f"no layout multiplies out: {t.gpus:,} GPU{'s' * (t.gpus != 1)} as TP x CP x PP x DP, DP dividing the "
            f"{t.global_batch:,}-sequence batch, for {m.name} ({shape})"
            + (f" with {', '.join(fixed)}" if fixed else "")
            + (f" (interleaving, --vpp {c.vpp}, also needs each DP rank's micro-batches a multiple of PP)"
               if (c.vpp or 1) > 1 else "")
            + "; change the GPU count, the batch or a fixed degree")


def links_of(cluster, dtype: str, kernel: str = "auto", overhead: float = EXPERT_OVERHEAD,
             ub_sms: int = UB_SMS) -> Links:
    """What the step-time model needs of a cluster (cluster.Cluster) for a dtype and attention kernel, with the
    seconds of fixed work per routed expert and the SMs TE's userbuffers hold (steptime.Links)."""
    gpu = cluster.gpu
    return Links(gpu.peak(dtype), gpu.peak("bf16"), gpu.memory_bandwidth, cluster.gpus_per_node,
                 cluster.intra_bandwidth, cluster.inter_bandwidth, matmul_efficiency(dtype, gpu),
                 attention_efficiency(gpu, kernel), matmul_efficiency("bf16", gpu), DTYPE_TABLE[dtype].nbytes,
                 overhead, gpu.sm_count or 0, ub_sms, attention_kernel(gpu, kernel) == "unfused",
                 gpu.link_bandwidth or 0.0, gpu.host_bandwidth or 0.0)
