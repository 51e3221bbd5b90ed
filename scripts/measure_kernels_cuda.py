"""Time on a CUDA GPU the kernels the training planner's step time is made of (llmcalc.steptime): the
layers' GEMMs at the survey's training shapes in bf16 and FP8, causal attention forward and backward
through PyTorch's cuDNN and FlashAttention-2 backends, routed experts' small GEMMs one expert at a time
(eager, from a CUDA graph, and torch._grouped_mm), whole Llama blocks in eager PyTorch, and the host's
launch time for one small eager op.

Not part of the test suite. Run on a machine with a GPU and torch:

    python scripts/measure_kernels_cuda.py OUT.json

The JSON it writes is kept as test data (tests/data/gpu_kernels.json) with the versions it ran on. Times are
medians of CUDA-event timings after warm-up, on random data, each case timed right after 0.3 s of large GEMMs
(heat): at the power-limited clock a training step runs at, which each row records (SM MHz, board W).
``--only=gemms,attention`` runs chosen sections; ``--dry`` runs tiny shapes on the CPU to check the script.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

DRY = "--dry" in sys.argv
DEV = "cpu" if DRY else "cuda"
BF16 = torch.bfloat16

# (name, hidden, q width, kv width, ffn, gated) of the published configs: Llama 3 8B/70B/405B (presets/models),
# GPT-3 175B (Brown et al. 2020, Table 2.1: a plain 4x MLP).
MODELS = [("llama-3-8b", 4096, 4096, 1024, 14336, True), ("llama-3-70b", 8192, 8192, 1024, 28672, True),
          ("llama-3.1-405b", 16384, 16384, 1024, 53248, True), ("gpt3-175b", 12288, 12288, 12288, 49152, False)]
TPS = {"llama-3-8b": (1, 2, 4), "llama-3-70b": (4, 8), "llama-3.1-405b": (8,), "gpt3-175b": (8,)}
TOKENS = 8192  # one micro-batch of 8k tokens (1 x 8192, or 4 x 2048)


def heat(seconds: float = 0.3) -> None:
    """Hold the tensor cores busy (8192-cube bf16 GEMMs) for ``seconds`` before a case, so that every case is
    timed at the clock a training step runs at: within a second of such a load an H100 reaches its power limit
    and its SM clock falls from the boost clock to about 1.3 GHz (scripts/measure_sustained_cuda.py)."""
    if DRY:
        return
    if not HEATER:
        HEATER.append(torch.randn(8192, 8192, device=DEV, dtype=BF16))
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(4):
            HEATER[0] @ HEATER[0]
        torch.cuda.synchronize()


HEATER: list = []  # heat()'s operand, made once


def clock() -> dict:
    """The SM clock (MHz) and board power (W) just after a case, where torch can read them (NVML)."""
    if DRY:
        return {}
    try:
        return {"sm_mhz": torch.cuda.clock_rate(), "power_w": round(torch.cuda.power_draw() / 1e3)}
    except Exception:  # no NVML
        return {}


def timed(fn, reps: int = 10, warm: int = 3) -> float:
    """Median seconds of ``fn`` over ``reps`` runs after heat() and ``warm`` runs (CUDA events; a wall clock on
    the CPU)."""
    heat()
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        if DRY:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def linears(hidden: int, q: int, kv: int, ffn: int, gated: bool, tp: int) -> list[tuple[str, int, int]]:
    """(name, output features, input features) of one layer's linears on one of ``tp`` ranks, fused as Megatron
    fuses them (linear_qkv; fc1 holds gate and up)."""
    return [("qkv", (q + 2 * kv) // tp, hidden), ("proj", hidden, q // tp),
            ("fc1", (2 if gated else 1) * ffn // tp, hidden), ("fc2", hidden, ffn // tp)]


def layer_linears():
    """(model, tp, linear, output features, input features, tokens) of every layer shape the survey's runs have."""
    tokens = 256 if DRY else TOKENS
    for name, hidden, q, kv, ffn, gated in MODELS[:1] if DRY else MODELS:
        for tp in (1,) if DRY else TPS[name]:
            for lin, out, inp in linears(hidden, q, kv, ffn, gated, tp * (16 if DRY else 1)):
                yield name, tp, lin, out, inp, tokens


def gemm_case(gemm: str, m: int, n: int, k: int, fp8: bool) -> float:
    """Seconds of one m x n x k product. bf16 in the layouts a linear's passes have: forward x @ W^T, data
    gradient dy @ W, weight gradient dy^T @ x. FP8 (torch._scaled_mm, per-tensor scales) always TN, the one
    layout Hopper's FP8 GEMMs take: Transformer Engine feeds them transposed FP8 copies, whose casts are not
    timed here."""
    if fp8:
        a = torch.randn(m, k, device=DEV, dtype=BF16).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=DEV, dtype=BF16).to(torch.float8_e4m3fn)
        one = torch.ones((), device=DEV)
        return timed(lambda: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=BF16))
    if gemm == "fprop":
        a, b = torch.randn(m, k, device=DEV, dtype=BF16), torch.randn(n, k, device=DEV, dtype=BF16)
        return timed(lambda: a @ b.t())
    if gemm == "dgrad":
        a, b = torch.randn(m, k, device=DEV, dtype=BF16), torch.randn(k, n, device=DEV, dtype=BF16)
        return timed(lambda: a @ b)
    a, b = torch.randn(k, m, device=DEV, dtype=BF16), torch.randn(k, n, device=DEV, dtype=BF16)
    return timed(lambda: a.t() @ b)


def gemms() -> list[dict]:
    """Each linear's forward (tokens x in -> out), data gradient (tokens x out -> in) and weight gradient
    (out x tokens -> in), each 2 x tokens x out x in FLOPs."""
    rows = []
    for name, tp, lin, out, inp, tokens in layer_linears():
        for gemm, (m, n, k) in {"fprop": (tokens, out, inp), "dgrad": (tokens, inp, out),
                                "wgrad": (out, inp, tokens)}.items():
            row = {"model": name, "tp": tp, "linear": lin, "gemm": gemm, "m": m, "n": n, "k": k,
                   "flops": 2 * m * n * k}
            for dtype in ("bf16",) if DRY else ("bf16", "fp8"):
                row[f"{dtype}_s"] = gemm_case(gemm, m, n, k, dtype == "fp8")
                row |= {f"{dtype}_{key}": value for key, value in clock().items()}
            rows.append(row)
    return rows


def wgrad_fp32() -> list[dict]:
    """Each linear's weight gradient as Megatron runs it with gradient_accumulation_fusion: accumulated in place
    into the fp32 main_grad (cuBLAS beta = 1, fp32 C and D; Transformer Engine's wgrad, core 0.15), against the
    bf16 product written fresh (beta = 0) that gemms() times."""
    rows = []
    for name, tp, lin, out, inp, tokens in layer_linears():
        dy = torch.randn(tokens, out, device=DEV, dtype=BF16)
        x = torch.randn(tokens, inp, device=DEV, dtype=BF16)
        grad = torch.zeros(out, inp, device=DEV, dtype=torch.float32)
        row = {"model": name, "tp": tp, "linear": lin, "m": out, "n": inp, "k": tokens,
               "flops": 2 * out * inp * tokens, "bf16_s": timed(lambda: dy.t() @ x)}
        if not DRY:
            try:  # in place where this torch's addmm takes out=; else into a fresh fp32 tensor (same bytes)
                row["fp32_accumulate_s"] = timed(lambda: torch.addmm(grad, dy.t(), x, out_dtype=torch.float32, out=grad))
            except (RuntimeError, TypeError):
                row["fp32_accumulate_s"] = timed(lambda: torch.addmm(grad, dy.t(), x, out_dtype=torch.float32))
                row["out_of_place"] = True
        rows.append(row | clock())
    return rows


def attention() -> list[dict]:
    """Causal attention, heads x head_dim per GPU, batch x seq = 32k tokens: forward, and forward + backward
    (the inputs' gradients returned, not accumulated), per backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"math": SDPBackend.MATH} if DRY else {"cudnn": SDPBackend.CUDNN_ATTENTION,
                                                      "flash2": SDPBackend.FLASH_ATTENTION}
    shapes = [(1, 2, 64, 256)] if DRY else [
        (heads, dim, seq) for heads, dim in ((32, 128), (16, 128), (32, 64)) for seq in (2048, 4096, 8192, 16384)]
    rows = []
    for shape in shapes:
        heads, dim, seq = shape[-3:]
        batch = max(1, (32768 if not DRY else 256) // seq)
        q, k, v = (torch.randn(batch, heads, seq, dim, device=DEV, dtype=BF16, requires_grad=True)
                   for _ in range(3))
        grad = torch.randn(batch, heads, seq, dim, device=DEV, dtype=BF16)
        for name, backend in backends.items():
            row = {"backend": name, "batch": batch, "heads": heads, "head_dim": dim, "seq": seq,
                   "causal_forward_flops": 2 * batch * heads * seq * seq * dim}  # 4 b h s^2 d, half of it
            try:
                with sdpa_kernel(backend):
                    def fwd():
                        with torch.no_grad():
                            F.scaled_dot_product_attention(q, k, v, is_causal=True)

                    def both():
                        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                        torch.autograd.grad(out, (q, k, v), grad)

                    row["forward_s"] = timed(fwd)
                    row["forward_backward_s"] = timed(both)
                    row |= clock()
            except RuntimeError as e:  # a backend that does not take the shape
                row["error"] = str(e).splitlines()[0][:200]
            rows.append(row)
    return rows


# (hidden, expert width, local experts, tokens each): Qwen3-30B-A3B's and DeepSeek-V3's experts
EXPERT_CASES = [(256, 64, 4, 32)] if DRY else [
    (h, f, e, m) for h, f in ((2048, 768), (7168, 2048)) for e in (8, 32) for m in (128, 512, 2048)]


def experts() -> list[dict]:
    """One MoE layer's routed experts run one at a time (Megatron-Core's SequentialMLP; TE's GroupedLinear
    launches a GEMM per expert as well on Hopper): E experts x M tokens each, SwiGLU, forward + backward by
    autograd. Also the same experts' FLOPs as one dense GEMM pair of E x M rows, to compare."""
    rows = []
    for hidden, ffn, count, m in EXPERT_CASES:
        w1 = [torch.randn(2 * ffn, hidden, device=DEV, dtype=BF16, requires_grad=True) for _ in range(count)]
        w2 = [torch.randn(hidden, ffn, device=DEV, dtype=BF16, requires_grad=True) for _ in range(count)]
        x = torch.randn(count * m, hidden, device=DEV, dtype=BF16, requires_grad=True)
        g = torch.randn(count * m, hidden, device=DEV, dtype=BF16)

        def looped():
            outs = []
            for e, chunk in enumerate(x.split(m)):
                gate, up = (chunk @ w1[e].t()).chunk(2, dim=-1)
                outs.append((F.silu(gate) * up) @ w2[e].t())
            torch.autograd.grad(torch.cat(outs), [x, *w1, *w2], g)

        dense1 = torch.randn(2 * ffn, hidden, device=DEV, dtype=BF16, requires_grad=True)
        dense2 = torch.randn(hidden, ffn, device=DEV, dtype=BF16, requires_grad=True)

        def fused():
            gate, up = (x @ dense1.t()).chunk(2, dim=-1)
            torch.autograd.grad((F.silu(gate) * up) @ dense2.t(), [x, dense1, dense2], g)

        rows.append({"hidden": hidden, "ffn": ffn, "experts": count, "tokens_each": m,
                     "flops": 3 * 2 * count * m * 3 * hidden * ffn,  # forward + backward of 3 h x f matrices
                     "looped_s": timed(looped), "one_gemm_pair_s": timed(fused)})
    return rows


def expert_kernels() -> list[dict]:
    """The same experts' GPU time alone: forward and backward written out (two GEMMs forward, four backward,
    SwiGLU's elementwise) one expert at a time, eager and replayed from a CUDA graph (no host launches), and
    forward through torch._grouped_mm (one kernel for all experts) where this torch has it."""
    rows = []
    for hidden, ffn, count, m in EXPERT_CASES:
        w1 = torch.randn(count, 2 * ffn, hidden, device=DEV, dtype=BF16) / hidden ** 0.5
        w2 = torch.randn(count, hidden, ffn, device=DEV, dtype=BF16) / ffn ** 0.5
        x = torch.randn(count * m, hidden, device=DEV, dtype=BF16)
        dy = torch.randn(count * m, hidden, device=DEV, dtype=BF16)

        def manual():
            for e in range(count):
                xe, dye = x[e * m:(e + 1) * m], dy[e * m:(e + 1) * m]
                gate, up = (xe @ w1[e].t()).chunk(2, dim=-1)
                act = F.silu(gate) * up
                _ = act @ w2[e].t()
                dact = dye @ w2[e]
                _ = dye.t() @ act  # fc2 weight gradient
                sig = torch.sigmoid(gate)
                dh = torch.cat([dact * up * sig * (1 + gate * (1 - sig)), dact * F.silu(gate)], dim=-1)
                _ = dh @ w1[e]  # fc1 data gradient
                _ = dh.t() @ xe  # fc1 weight gradient

        row = {"hidden": hidden, "ffn": ffn, "experts": count, "tokens_each": m,
               "flops": 3 * 2 * count * m * 3 * hidden * ffn, "manual_eager_s": timed(manual)}
        if not DRY:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                manual()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                manual()
            row["manual_graph_s"] = timed(graph.replay)
            del graph
        if hasattr(torch, "_grouped_mm") and not DRY:
            offs = torch.arange(m, count * m + 1, m, device=DEV, dtype=torch.int32)
            w1t, w2t = w1.transpose(1, 2), w2.transpose(1, 2)  # [E, K, N] views, column-major per expert

            def grouped():
                gate, up = torch._grouped_mm(x, w1t, offs=offs).chunk(2, dim=-1)
                torch._grouped_mm((F.silu(gate) * up).contiguous(), w2t, offs=offs)

            try:
                row["grouped_forward_s"] = timed(grouped)
            except RuntimeError as e:
                row["grouped_error"] = str(e).splitlines()[0][:200]
        rows.append(row)
    return rows


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def block(hidden: int, heads: int, kv_heads: int, ffn: int, batch: int, seq: int, backend) -> dict:
    """A Llama block in plain PyTorch eager, bf16 (fused QKV and gate-up linears, RMSNorm, rotary, SDPA causal
    with GQA, SwiGLU, residuals): forward, and forward + backward, of batch x seq tokens. ``heads``, ``kv_heads``
    and ``ffn`` are one tensor-parallel rank's (no communication)."""
    from torch.nn.attention import sdpa_kernel

    dim = 128
    q_width, kv_width = heads * dim, kv_heads * dim

    def weight(out, inp):
        return (torch.randn(out, inp, device=DEV, dtype=BF16) / inp ** 0.5).requires_grad_()

    w_qkv, w_o = weight(q_width + 2 * kv_width, hidden), weight(hidden, q_width)
    w_fc1, w_fc2 = weight(2 * ffn, hidden), weight(hidden, ffn)
    n1 = torch.ones(hidden, device=DEV, dtype=BF16, requires_grad=True)
    n2 = torch.ones(hidden, device=DEV, dtype=BF16, requires_grad=True)
    x = torch.randn(batch, seq, hidden, device=DEV, dtype=BF16, requires_grad=True)
    g = torch.randn(batch, seq, hidden, device=DEV, dtype=BF16)
    angle = torch.outer(torch.arange(seq, device=DEV, dtype=torch.float32),
                        1e-4 ** (torch.arange(0, dim, 2, device=DEV, dtype=torch.float32) / dim))
    cos, sin = angle.cos().to(BF16), angle.sin().to(BF16)

    def forward():
        y = F.rms_norm(x, (hidden,), n1)
        q, k, v = (y @ w_qkv.t()).split([q_width, kv_width, kv_width], dim=-1)
        q = rope(q.view(batch, seq, heads, dim).transpose(1, 2), cos, sin)
        k = rope(k.view(batch, seq, kv_heads, dim).transpose(1, 2), cos, sin)
        v = v.view(batch, seq, kv_heads, dim).transpose(1, 2)
        with sdpa_kernel(backend):
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv_heads != heads)
        h = x + a.transpose(1, 2).reshape(batch, seq, q_width) @ w_o.t()
        gate, up = (F.rms_norm(h, (hidden,), n2) @ w_fc1.t()).chunk(2, dim=-1)
        return h + (F.silu(gate) * up) @ w_fc2.t()

    def fwd():
        with torch.no_grad():
            forward()

    return {"hidden": hidden, "heads": heads, "kv_heads": kv_heads, "head_dim": dim, "ffn": ffn, "batch": batch,
            "seq": seq, "forward_s": timed(fwd),
            "forward_backward_s": timed(lambda: torch.autograd.grad(forward(), [x, w_qkv, w_o, w_fc1, w_fc2, n1, n2], g)),
            **clock()}


def blocks() -> list[dict]:
    """Llama 3 8B's block whole (TP 1) and 70B's on one of 8 TP ranks, at 8k tokens, under both SDPA backends."""
    from torch.nn.attention import SDPBackend

    if DRY:
        return [{"model": "tiny", "backend": "math", **block(256, 2, 1, 512, 1, 128, SDPBackend.MATH)}]
    rows = []
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash2", SDPBackend.FLASH_ATTENTION)):
        for model, shape in (("llama-3-8b", (4096, 32, 8, 14336)), ("llama-3-70b/tp8", (8192, 8, 1, 3584))):
            for batch, seq in ((1, 8192), (4, 2048)):
                try:
                    rows.append({"model": model, "backend": name, **block(*shape, batch, seq, backend)})
                except RuntimeError as e:
                    rows.append({"model": model, "backend": name, "batch": batch, "seq": seq,
                                 "error": str(e).splitlines()[0][:200]})
                torch.cuda.empty_cache()
    return rows


def launches() -> dict:
    """What one small eager op costs the CPU to launch: a chain of 2000 adds on a tiny tensor."""
    x = torch.zeros(16, device=DEV)

    def chain():
        for _ in range(2000):
            x.add_(1)

    return {"ops": 2000, "seconds": timed(chain, reps=5, warm=1)}


def write(path: str, info: dict) -> None:
    """``info`` as JSON with each list's rows one to a line, as tests/data keeps measurements."""
    lines = []
    for key, value in info.items():
        if isinstance(value, list) and value:
            rows = ",\n".join(f"  {json.dumps(row)}" for row in value)
            lines.append(f" {json.dumps(key)}: [\n{rows}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else None
    torch.manual_seed(0)
    info = {"script": "scripts/measure_kernels_cuda.py", "torch": torch.__version__}
    if not DRY:
        props = torch.cuda.get_device_properties(0)
        info |= {"device": props.name, "sms": props.multi_processor_count, "cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version()}
    heat(3.0)  # reach the power limit before the first case
    started = time.time()
    sections = {"gemms": gemms, "wgrad_fp32": wgrad_fp32, "attention": attention, "experts": experts,
                "expert_kernels": expert_kernels, "blocks": blocks, "launch": launches}
    chosen = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")), list(sections))
    for name in chosen:
        info[name] = sections[name]()
    info["seconds"] = round(time.time() - started, 1)
    if out:
        write(out, info)
    peak = 989.4e12  # H100 and H200 bf16 dense: the printed shares are of it
    for r in info.get("wgrad_fp32", ()):
        print(r["model"], r["tp"], r["linear"], "wgrad", f"bf16 {r['flops'] / r['bf16_s'] / peak:.3f}",
              f"fp32-accumulate {r['flops'] / r['fp32_accumulate_s'] / peak:.3f}" if "fp32_accumulate_s" in r else "")
    for r in info.get("gemms", ()):
        print(r["model"], r["tp"], r["linear"], r["gemm"], r["m"], r["n"], r["k"],
              *(f"{d} {r['flops'] / r[d + '_s'] / peak:.3f}" for d in ("bf16", "fp8") if d + "_s" in r))
    for r in info.get("attention", ()):
        if "error" in r:
            print(r["backend"], r["heads"], r["head_dim"], r["seq"], r["error"])
            continue
        f = r["causal_forward_flops"]
        print(r["backend"], r["heads"], r["head_dim"], r["seq"], f"fwd {f / r['forward_s'] / peak:.3f}",
              f"fwd+bwd {3 * f / r['forward_backward_s'] / peak:.3f}")
    for r in info.get("experts", ()):
        print(r["hidden"], r["ffn"], r["experts"], r["tokens_each"], f"looped {r['flops'] / r['looped_s'] / peak:.3f}",
              f"one {r['flops'] / r['one_gemm_pair_s'] / peak:.3f}", f"{r['looped_s'] * 1e3:.2f} ms")
    for r in info.get("expert_kernels", ()):
        print(r["hidden"], r["ffn"], r["experts"], r["tokens_each"],
              *(f"{k} {r[k] * 1e3:.3f} ms {r['flops'] / (3 if k.startswith('grouped') else 1) / r[k] / peak:.3f}"
                for k in r if k.endswith("_s")),
              r.get("grouped_error", ""))
    for r in info.get("blocks", ()):
        print(r["model"], r["backend"], r["batch"], r["seq"], r.get("error") or
              f"fwd {r['forward_s'] * 1e3:.2f} ms fwd+bwd {r['forward_backward_s'] * 1e3:.2f} ms")
    if "launch" in info:
        print("launch us/op", info["launch"]["seconds"] / info["launch"]["ops"] * 1e6)
    print("total s", info["seconds"])


if __name__ == "__main__":
    main()
