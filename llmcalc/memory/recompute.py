"""Megatron-Core's recompute modules (--recompute-modules under selective recomputation): which there are, what each
rebuilds and how, and which a model can use."""

from __future__ import annotations

from ..spec import SpecError, check_choice

# Megatron-Core's --recompute-modules under selective recomputation (core 0.15 transformer_config): core_attn is
# Korthikanti's s x s terms (its default, and llmcalc's "selective"); mla_up_proj and moe_act checkpoint MLA's
# up-projections with rope and the routed experts' activation, discarding their outputs after forward
# (OUTPUT_DISCARDING); mlp checkpoints a dense layer's MLP (transformer_layer.py: not an MoE layer's), moe an MoE
# layer's router, dispatch, experts and combine, shared_experts its shared expert, each keeping only its input
# (moe_layer.py). "moe" covers what moe_act and shared_experts would rebuild (COVERS).
RECOMPUTE_MODULES = ("core_attn", "mla_up_proj", "moe_act", "mlp", "moe", "shared_experts")
DEFAULT_RECOMPUTE_MODULES = ("core_attn",)  # Megatron-Core's default, and what "selective" alone means
OUTPUT_DISCARDING = ("mla_up_proj", "moe_act")  # CheckpointWithoutOutput: the rebuilt copy refills the freed one
COVERS = {"moe_act": "moe", "shared_experts": "moe"}  # a tensor's module -> the module whose checkpoint holds it too
# The attention's modules; the others are the MLP's, whose rebuilt tensors are freed when its backward ends, before
# the attention's backward rebuilds its own (tensor_parallel.checkpoint, core 0.15 random.py).
ATTENTION_SIDE = ("core_attn", "mla_up_proj")
REBUILT = {"core_attn": "s x s attention terms", "mla_up_proj": "MLA up-projections' outputs",
           "moe_act": "experts' activation outputs", "mlp": "dense MLPs' tensors", "moe": "MoE layers' tensors",
           "shared_experts": "shared experts' tensors"}  # as the notes name what each rebuilds


def check_module_names(modules: tuple[str, ...]) -> None:
    """At least one module, each one Megatron-Core's (RECOMPUTE_MODULES)."""
    if not modules:
        raise SpecError("--recompute-modules needs at least one module (core_attn is Megatron's default)")
    for module in modules:
        check_choice("--recompute-modules", module, RECOMPUTE_MODULES)


def check_recompute_modules(m, modules: tuple[str, ...], ep_overlap: bool = False) -> None:
    """Megatron-Core refuses mla_up_proj without multi-latent attention and moe_act without (grouped-GEMM) experts
    (transformer_config.py, core 0.15); mlp, moe and shared_experts, which it ignores where the model lacks them,
    are refused here too, and so is moe beside the overlapped MoE all-to-all (its layers then run outside
    MoELayer.forward, where the checkpoint is: fine_grained_callables.py)."""
    if "mla_up_proj" in modules and not m.is_mla:
        raise SpecError(f"--recompute-modules mla_up_proj needs multi-latent attention; {m.name} has none")
    for module in ("moe_act", "moe"):
        if module in modules and not m.is_moe:
            raise SpecError(f"--recompute-modules {module} needs routed experts; {m.name} is dense")
    if "shared_experts" in modules and not (m.is_moe and m.shared_expert_size):
        raise SpecError(f"--recompute-modules shared_experts needs shared experts; {m.name} has none")
    if "moe" in modules and ep_overlap:
        raise SpecError("--recompute-modules moe does nothing beside --ep-overlap (Megatron-Core's overlapped MoE "
                        "layers skip its checkpoint); drop one of them, or name moe_act or shared_experts")
    if "mlp" in modules and m.is_moe and not m.dense_layers:
        raise SpecError(f"--recompute-modules mlp rebuilds dense MLPs; {m.name}'s layers are all MoE (moe rebuilds "
                        "those)")
