"""vLLM: the KV-cache budget its start-up profiling arrives at, release by release.

    budget = gpu_memory_utilization x total - weights - non-torch - activation peak [- CUDA graphs]
    blocks = budget // (block_size x KV bytes per token per layer x layers of this stage)

then the minimum over the TP and PP workers (vllm/worker/worker.py determine_num_available_blocks
in V0; vllm/v1/worker/gpu_worker.py determine_available_memory and v1/core/kv_cache_utils.py in V1;
facts read from the released wheels 0.6.3-0.33). What changes between releases, and is modelled:

- 0.6.5+: weights measured as the torch bytes the model load allocated (so the rotary cos/sin
  table and the vocabulary padded to 64 rows count). Non-torch memory is what grew since a
  baseline snapshot: cuBLAS handles and kernels, and NCCL / custom all-reduce buffers while the
  snapshot precedes the NCCL set-up (before 0.11).
- The profile run: max_num_batched_tokens tokens through the model, then the sampler on
  min(max_num_seqs, tokens) rows of vocabulary-wide fp32 logits. The logits are gathered whole on
  the sampling rank, so that part does not shrink with TP.
- Defaults: V0 (before 0.8) 256 sequences and, without chunked prefill (on by itself only past a
  32k context), max(max_model_len, 2048) tokens; V1 (0.8+) 1024 sequences and 8192 tokens (the
  OpenAI server's) on GPUs of 70 GiB or more (A100s excluded from 0.9), else 256 and 2048.
- CUDA graphs are captured after the KV cache exists, outside the budget, until 0.20, whose
  profiler estimates them and takes them off the budget (--enforce-eager: none); 0.20 also raised
  the default gpu_memory_utilization from 0.9 to 0.92.
- Sliding-window layers are sized like full ones; from 0.9.1 (hybrid KV manager) the window only
  lowers the blocks a request needs, so it raises the concurrency, and from 0.24 the token count
  printed is concurrency x max_model_len.
- MLA keeps one latent per token per layer: V1 in 64-token blocks (FlashMLA), V0 0.7+ padded to
  640 values (256-byte alignment), V0 0.6 as plain attention with 256-wide heads.
"""

from __future__ import annotations

import math

from ...breakdown import Rows
from ...dtypes import DTYPE_BYTES
from ...kvcache import kv_values_per_token_layer
from ...spec import ModelSpec
from ...units import fmt_bytes
from ..inference import engine_rows, kv_bytes_per_token, pool_result
from ..memo import ignoring
from ..placement import Stage
from ..settings import MemorySettings
from ..stage import StageMemory, whole_bytes
from . import parse_version
from .common import GiB, MiB, Device, nccl_bytes, rope_cache_bytes, vocab_padding_bytes

V1 = (0, 8)  # the V1 engine is the default from 0.8.0 (VLLM_USE_V1)
V0_CHUNK_2048 = (0, 6, 5)  # V0's chunked-prefill budget: 512 tokens before, 2048 from 0.6.5
A100_EXCLUDED = (0, 9)  # A100s leave the large-GPU defaults from 0.9
HYBRID_MANAGER = (0, 9, 1)  # sliding windows credited in the concurrency
V0_MLA = (0, 7)  # MLA in V0 from 0.7 (latent padded to 640 values)
NCCL_IN_BASELINE = (0, 11)  # the memory snapshot is taken after NCCL's set-up from 0.11
GRAPHS_BUDGETED = (0, 20)  # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS on by default
TOKENS_FROM_CONCURRENCY = (0, 24)  # "GPU KV cache size" = int(concurrency x max_model_len)

# Non-torch growth on one GPU (cuBLAS/cuDNN handles, lazily loaded kernels): 0.05-0.73 GiB in 13
# public start-up logs (0.6.4-0.10.2), 0.25 GiB typical. NCCL's buffers (common.nccl_bytes) count
# too while the snapshot precedes NCCL's set-up (before 0.11).
NON_TORCH = 0.25 * GiB
# The sampler's buffers per vocabulary entry of each row: 16-bit logits, their fp32 copy, sorted
# values with int64 indices, probabilities, cumulative sums, masks, log-probs: 38-41 B in the
# profiled peaks of vLLM 0.6-0.8 logs where the sampler dominates (Llama-3-8B on H100 1.26 GiB,
# Llama-3.2-3B on T4 0.90, Qwen2.5-0.5B on T4 1.44, Phi-4 on an 80 GB GPU 0.94; 4096 rows of
# Llama-3.1-70B on MI300X take the 19 GiB the log leaves). From 0.17 a Triton top-k/top-p kernel
# replaces the sort for 8+ rows: about 20 B (Qwen2.5-72B on 4 x L40S, 0.19); from 0.27 the budget
# also keeps the sampler's transient peak (total_consumed + transient headroom): 40 B again
# (Llama-3.1-8B on A100, 0.31: 1.44 GiB).
SAMPLER_BYTES_PER_LOGIT = (((0,), 40), ((0, 17), 20), ((0, 27), 40))
FUSED_MOE_CHUNK = 32768  # fused_moe processes at most this many tokens at a time (VLLM_FUSED_MOE_CHUNK_SIZE)
# CUDA-graph memory per layer per captured batch size: 0.14-0.66 MiB in logs of 0.7-0.31
# ("Graph capturing finished ... took X GiB" over layers x sizes), 0.25 MiB typical.
GRAPH_BYTES_PER_LAYER = 0.25 * MiB
LARGE_GPU = 70 * GiB  # V1's larger default batch sizes from this much device memory


def defaults(s: MemorySettings, dev: Device, v: tuple) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) as this release chooses them for ``vllm serve``."""
    if v < V1:
        mns = 256
        if s.seq > 32768:  # V0 turns chunked prefill on by itself past a 32k context
            mnbt = 2048 if v >= V0_CHUNK_2048 else 512
        else:
            mnbt = max(s.seq, 2048)
    else:
        large = dev.total >= LARGE_GPU and (v < A100_EXCLUDED or "a100" not in dev.name.lower())
        mns, mnbt = (1024, 8192) if large else (256, 2048)
        if s.prefill_chunk and not s.max_num_seqs:  # V1 lowers its default cap to a smaller budget it is given
            mns = min(mns, s.prefill_chunk)
    mnbt, mns = s.prefill_chunk or mnbt, s.max_num_seqs or mns
    _check_scheduler(s, mnbt, mns)
    return mnbt, mns


# --block-size vLLM's CacheConfig takes on CUDA (BlockSize: 1, 8, 16, 32, 64, 128; 256 in later releases)
BLOCK_SIZES = (1, 8, 16, 32, 64, 128, 256)


def _check_scheduler(s: MemorySettings, mnbt: int, mns: int) -> None:
    """What vllm serve refuses at start whatever the context (SchedulerConfig's _verify_args, CacheConfig): a step's
    token budget, as given, below the running-request cap; a block size its kernels have no case for. (V0 also
    wants a whole max_model_len a step up to 32k, beyond which it chunks: not refused here, as a search over lengths
    would stop short of the longer contexts that start.)"""
    from ...spec import SpecError

    if s.prefill_chunk and mnbt < mns:
        raise SpecError(f"--max-num-batched-tokens {mnbt:,} is below max_num_seqs {mns:,}: vLLM refuses to start "
                        "(each running request needs a token a step); raise it or lower --max-num-seqs")
    if s.kv_block is not None and s.kv_block not in BLOCK_SIZES:
        raise SpecError(f"--block-size {s.kv_block} is not one vLLM takes ({', '.join(map(str, BLOCK_SIZES))})")


def capture_sizes(v: tuple, mns: int, mnbt: int) -> int:
    """How many batch sizes get a CUDA graph (vllm config: cuda_graph_sizes / cudagraph_capture_sizes)."""
    if v < V1:
        top = min(256, -(-mns // 8) * 8)
        sizes = [1, 2, 4] + list(range(8, top + 1, 8))
    elif v < (0, 11):
        sizes = [1, 2, 4] + list(range(8, 513, 8))
    elif v < (0, 13):
        sizes = [1, 2, 4] + list(range(8, min(2 * mns, 512) + 1, 8))
    else:
        top = min(2 * mns, 512)
        sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, top + 1, 16))
    return len([b for b in sizes if b <= mnbt])


def kv_layout(m: ModelSpec, s: MemorySettings, v: tuple) -> tuple[float, int, str]:
    """(values per token per layer on one rank, block size, how) for this release."""
    tp = s.parallel.tp
    if not m.is_mla:
        return kv_values_per_token_layer(m, tp), s.kv_block or 16, "K and V of the kv heads"
    if v >= V1:
        return kv_values_per_token_layer(m, tp), s.kv_block or 64, "one MLA latent (kv_lora_rank + rope), 64-token blocks"
    if v >= V0_MLA:
        return 640, s.kv_block or 16, "one MLA latent padded to 640 values (256-byte alignment)"
    heads = max(1, m.kv_heads // tp)
    return 2 * heads * 256, s.kv_block or 16, "MLA run as plain attention, heads padded to 256"


def forward_peak(m: ModelSpec, st: Stage, tokens: int, tp: int, e: float) -> float:
    """Bytes alive at the widest point of one layer for ``tokens`` tokens on one TP rank: the
    residual, the normed input and one more hidden-wide tensor (3h), plus the widest sub-layer:
    fused qkv + attention output, the gated MLP's gate_up + activation (3I/tp), or fused_moe's
    per-expert-copy caches (top_k x (3I/tp + h), at most 32k tokens at a time).
    Checked: Llama-3.1-8B's profiled peak grows 0.92 GiB from 20000 to 29000 tokens (vLLM issue
    10517), 110.6 KB/token here against 109.7 measured."""
    h, heads = m.hidden_size, math.ceil(m.num_attention_heads / tp)
    attn = (heads + 2 * max(1, m.kv_heads // tp)) * m.qk_head_dim + heads * m.v_dim
    widths = [tokens * attn]
    if st.dense:
        widths.append(tokens * (3 if m.mlp_type == "gated" else 2) * math.ceil(m.intermediate_size / tp))
    if st.moe:
        per_copy = 3 * math.ceil(m.expert_size / tp) + h
        shared = 3 * math.ceil(m.shared_expert_size / tp)
        widths.append(min(tokens, FUSED_MOE_CHUNK) * m.num_experts_per_tok * per_copy + tokens * shared)
    return e * (tokens * 3 * h + max(widths))


def stage(m: ModelSpec, s: MemorySettings, st: Stage, dev: Device) -> StageMemory:
    """One pipeline stage's GPU as vLLM ``s.engine_version`` sizes it."""
    rows, usable, per_token, block, notes, per_request, by_concurrency, mns = _before_pool(m, s, st, dev)
    # V0 prints its concurrency as tokens / max_model_len, but its block manager, like V1's, gives each request
    # whole blocks: what decides whether a batch fits
    v0 = parse_version(s.engine_version) < V1
    held = math.ceil(s.seq / block) if v0 else per_request
    # V0 runs one scheduler per pipeline stage (virtual engine), each with its own max_num_seqs
    seqs = mns * s.parallel.pp if v0 else mns
    return pool_result(Rows("byte").extend(rows), s, st, usable, per_token, block, list(notes), per_request,
                       tokens_by_concurrency=by_concurrency, held_per_request=held, max_seqs=seqs)


@ignoring("batch")
def _before_pool(m: ModelSpec, s: MemorySettings, st: Stage, dev: Device) -> tuple:
    """Every row but the KV pool's, and what pool_result needs to cut the pool: the same at every batch."""
    v = parse_version(s.engine_version)
    par = s.parallel
    e = DTYPE_BYTES[s.compute_dtype]
    mnbt, mns = defaults(s, dev, v)
    values, block, how = kv_layout(m, s, v)
    nccl = nccl_bytes(dev, par) if v < NCCL_IN_BASELINE else 0
    r = engine_rows(m, s, st, NON_TORCH + nccl, "cuBLAS handles, kernels" + (", NCCL/custom all-reduce buffers"
                    if nccl else "") + " (CUDA context outside the budget)",
                    rope_cache_bytes(m, e) + vocab_padding_bytes(m, st, par.tp, e), "rotary table, vocab padding")
    forward = forward_peak(m, st, mnbt, par.tp, e)
    rows = min(mns, mnbt)
    per_logit = [b for since, b in SAMPLER_BYTES_PER_LOGIT if v >= since][-1]
    sampler = rows * m.vocab_size * per_logit + mnbt * m.hidden_size * e if st.last else 0
    r.add("activations", whole_bytes(forward), f"profile run: {mnbt:,} tokens (max_num_batched_tokens), one layer at a time",
          how=("by the largest of one layer's live tensors over {} tokens (forward_peak)", mnbt))
    r.add("logits", whole_bytes(max(0.0, sampler - forward)),
          f"sampler on {rows} rows x {m.vocab_size:,} vocab x {per_logit} B, beyond the forward peak"
          if st.last else "not on this stage",
          how=("max(0, {} rows x {} vocab x {} B + {} tokens x {} hidden x {} B - activations)", rows, m.vocab_size,
               per_logit, mnbt, m.hidden_size, e) if st.last else ("0",))
    sizes = capture_sizes(v, mns, mnbt)
    graphs = sizes * st.layers * GRAPH_BYTES_PER_LAYER
    budgeted = v >= GRAPHS_BUDGETED and not s.enforce_eager
    r.add("cuda_graphs", whole_bytes(graphs if budgeted else 0),
          "--enforce-eager: none" if s.enforce_eager else
          f"{sizes} batch sizes x {st.layers} layers, estimated by the profiler" if budgeted else
          f"about {fmt_bytes(graphs)}, captured after the KV cache, outside gpu_memory_utilization (before 0.20)",
          how=("{} batch sizes x {} layers x {} B", sizes, st.layers, GRAPH_BYTES_PER_LAYER) if budgeted else ("0",))
    usable = math.floor(dev.total * s.gpu_util)  # requested memory
    notes = [f"vLLM {s.engine_version}: budget = {s.gpu_util:g} x {fmt_bytes(dev.total)} (gpu_memory_utilization "
             f"x total) - weights - non-torch - activation peak" + (" - CUDA graphs" if budgeted else ""),
             f"KV: {how}, {block}-token blocks, {s.kv_dtype}; max_num_seqs {mns}"
             + (f" a scheduler, one for each of the {par.pp} pipeline stages (V0): {mns * par.pp} at once"
                if v < V1 and par.pp > 1 else "") + f", max_num_batched_tokens {mnbt}"]
    return (r.build(), usable, kv_bytes_per_token(m, s, st, values), block, tuple(notes),
            _blocks_per_request(m, s, v, block, mnbt), v >= TOKENS_FROM_CONCURRENCY, mns)


def _blocks_per_request(m: ModelSpec, s: MemorySettings, v: tuple, block: int, mnbt: int) -> float:
    """Blocks one request of s.seq tokens needs, averaged over the layers.

    V0: the token count itself (concurrency = tokens / max_model_len). V1 before 0.9.1: whole
    blocks of the full context. From 0.9.1 sliding-window layers need only
    cdiv(min(window - 1 + max_num_batched_tokens, seq), block) + 1 blocks."""
    if v < V1:
        return s.seq / block
    full = math.ceil(s.seq / block)
    if v < HYBRID_MANAGER or not m.window_layers:
        return full
    window = math.ceil(min(m.sliding_window - 1 + mnbt, s.seq) / block) + 1
    L = m.num_hidden_layers
    return (m.window_layers * min(window, full) + (L - m.window_layers) * full) / L
