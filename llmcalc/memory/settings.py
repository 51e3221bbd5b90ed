"""What a memory estimate depends on besides the model and the GPU: MemorySettings and precisions."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dtypes import DEFAULT_GROUP_SIZE, DTYPE_BYTES, DTYPES, FLOAT_DTYPES, activation_dtype
from ..flops import RECOMPUTE
from ..params import OPTIMIZERS
from ..spec import Parallelism, SpecError, check_choice
from .engines import KNOB_FLAGS, resolve_engine
from .frameworks import DEFAULT_FRAMEWORK, FRAMEWORKS, LOSSES, Framework
from .precision import PRECISIONS, Precision, train_precision  # noqa: F401 - the first two re-exported
from .recompute import DEFAULT_RECOMPUTE_MODULES, check_module_names

GiB = 2**30
MODES = ("train", "infer")
ZERO_STAGES = (0, 1, 2, 3)
ATTENTION_IMPLS = ("eager", "sdpa", "flash")
FINETUNES = ("full", "lora", "qlora")
OFFLOADS = ("optimizer", "params", "activations")
# Training: memory outside PyTorch's allocator: the CUDA context with cuBLAS loaded (0.67 GiB measured
# on H100 and H200, CUDA 13: tests/data/gpu_measured.json). The caching allocator's own slack is the
# `allocator` row. Inference engines model their own non-torch memory (memory/engines).
DEFAULT_RESERVE = {"train": round(0.67 * GiB), "infer": 0}
DEFAULT_GPU_UTIL = {"train": 1.0}  # infer: the engine's own default (vLLM's gpu_memory_utilization 0.9)
DEFAULT_ATTENTION_IMPL = {"train": "sdpa", "infer": "flash"}  # HF transformers' default; vLLM's kernel
DEFAULT_LORA_RANK = 16


_WHOLE_NUMBERS = ("seq", "batch", "mini_seq", "lora_rank", "group_size", "vpp")
_OPTIONAL_WHOLE_NUMBERS = ("prefill_chunk", "kv_block", "max_num_seqs", "grad_accum", "prompt")
_TRAIN_ONLY = (("--zero", lambda s: s.zero), ("--offload", lambda s: s.offload),
               ("--recompute", lambda s: s.recompute != "none"), ("--mini-seq", lambda s: s.mini_seq > 1),
               ("--finetune", lambda s: s.finetune != "full"), ("--compile", lambda s: s.compile),
               ("--grad-accum", lambda s: (s.grad_accum or 1) > 1), ("--offload-layers", lambda s: s.offload_layers),
               ("--optimizer-in-backward", lambda s: s.optimizer_in_backward), ("--vpp", lambda s: s.vpp > 1))
_FRAMEWORK_ONLY = {"--framework": "framework", "--loss": "loss", "--lora-dropout": "lora_dropout",
                   "--bitsandbytes": "bitsandbytes"}
# bitsandbytes before 0.43.2 kept MatMul4Bit's input for backward (ctx.tensors = (A, B)); PR #1270 dropped it.
BNB_DROPS_INPUT = (0, 43, 2)
_INFER_ONLY = {"--engine": "engine", "--engine-version": "engine_version", "--keep-16bit": "keep_16bit",
               "--prompt": "prompt",
               **{flag: key for key, flag in KNOB_FLAGS.items()}}  # flag -> field


@dataclass(frozen=True)
class MemorySettings:
    """Everything a memory estimate depends on besides the model and the GPU.

    mode: train | infer. seq: tokens per sequence (infer: prompt + output, the KV context); prompt (infer): of them,
      those each request prefills at once, where the engine holds them all (transformers); None: seq.
    batch: sequences per micro-batch on one data-parallel replica (infer: concurrent requests).
    dtype: train: the 16-bit type of mixed/bf16 precision (fp32 for precision fp32), or the frozen
      base's dtype for LoRA; infer: the weights' dtype. Default from precision, else bf16.
    precision: fp32 | mixed (default, ZeRO's 16 B/param) | mixed-fp32-grads (HF's 18) | bf16.
    optimizer, zero (0-3), recompute (none | selective | full), attention_impl (eager | sdpa |
      flash; default sdpa for train as in HF transformers, flash for infer as in vLLM).
    kv_dtype: KV-cache dtype (default: the activation dtype of dtype; dtypes.py).
    engine: infer: vllm (default) | sglang | trtllm | llamacpp | hf, whose accounting the inference
      rows follow (memory/engines); engine_version: the release whose behaviour to follow (default:
      engines.ENGINES' default_version; vLLM 0.7.3, the V0 engine most published logs show).
    kv_block: infer: KV allocated in blocks of this many tokens (default: the engine's; vLLM 16).
    max_num_seqs, prefill_chunk (vLLM's max_num_batched_tokens), enforce_eager: the engine knobs
      (None: the engine's default for this GPU and version).
    keep_16bit: module names or patterns (quant.matches) whose weights stay 16-bit under a
      quantized dtype; weight_format "checkpoint": weights in the model's own quantization_config
      layout (set by memory_breakdown when --dtype is not given for a quantized checkpoint).
    framework: train: hf (default) | peft | litgpt | torchtune | unsloth | megatron | deepspeed | fsdp, whose
      defaults fill every option left None (memory/frameworks.py): loss, loss_dtype, optimizer,
      recompute, precision, lora_targets, lora_dropout, and how the step's peak forms.
    loss: full | chunked | fused cross-entropy (memory/loss.py).
    grad_accum: train: micro-batches per optimizer step; above 1 the gradients stay allocated through the
      forward and backward of the later micro-batches, and a pipeline stage holds at most this many in flight.
      None: not stated (enough to fill a pipeline, p, else one).
    vpp: train, megatron: virtual pipeline stages per rank (interleaved 1F1B); the first stage then holds
      p + (p - 1)/v micro-batches' activations once the step has that many (placement.pipeline_in_flight).
    optimizer_in_backward: train: each parameter steps as soon as its gradient is ready, from a backward
      hook, and the gradient is freed (torchtune's optimizer_in_bwd); no step holds every gradient.
    compile: train: the layers and the loss run under torch.compile (activations.layer_tensors, loss.py).
    fp8: train: Transformer Engine's FP8 GEMMs under this recipe (delayed | current | mxfp8; memory/fp8.py);
      fp8_params: the block weights are kept as FP8 only; fp8_transposes: the GPU's FP8 GEMMs take only the
      TN layout, so TE keeps each FP8 weight's transpose too (None: as on Hopper; memory_breakdown reads the GPU).
    bitsandbytes: the release QLoRA runs on (None: a current one); before 0.43.2 its 4-bit matmul kept
      every linear's input for backward.
    loss_dtype: the cross-entropy's dtype (default: the framework's; fp32 where it upcasts the logits).
    mini_seq: Mini-Sequence chunks M of the MLP and LM head (1 = off).
    offload: subset of (optimizer, params, activations): ZeRO-Offload / ZeRO-Infinity to CPU memory;
      activations: the checkpointed layer inputs wait in host memory (torchtune's activation offloading,
      Unsloth's offloaded checkpointing), one layer's brought back at a time.
    offload_layers: train, megatron: the saved activations of that many layers wait in host memory
      (Megatron-Core's cpu_offloading_num_layers, Transformer Engine's CPU offload; saved.offloaded_layers).
    finetune: full | lora | qlora; lora_rank (16), lora_targets (the framework's; "all" = every linear of
      the blocks), lora_dropout (the framework's; PEFT's 0.0).
    group_size: weights per 16-bit scale for int4/fp4 weights (128).
    gpu_util: usable fraction of capacity (train 1.0; infer: the engine's, vLLM 0.9); reserve: fixed
      extra bytes (train 1 GiB, infer 0); gpu_memory: capacity override in bytes.
    parallel: the layout (spec.Parallelism; resolve unstated degrees with Parallelism.resolve).
    """

    mode: str = "train"
    seq: int = 4096
    batch: int = 1
    prompt: int | None = None
    dtype: str | None = None
    precision: str | None = None
    optimizer: str | None = None
    zero: int | None = None  # None: the framework's stage (FSDP's 3), else 0
    recompute: str | None = None
    recompute_modules: tuple[str, ...] = DEFAULT_RECOMPUTE_MODULES  # what "selective" rebuilds (recompute.py)
    attention_impl: str | None = None
    kv_dtype: str | None = None
    loss_dtype: str | None = None
    mini_seq: int = 1
    offload: tuple[str, ...] = ()
    offload_layers: int = 0
    finetune: str = "full"
    lora_rank: int = DEFAULT_LORA_RANK
    lora_targets: tuple[str, ...] | None = None
    lora_dropout: float | None = None
    framework: str | None = None
    loss: str | None = None
    bitsandbytes: str | None = None
    compile: bool = False
    fp8: str | None = None
    fp8_params: bool = False
    fp8_transposes: bool | None = None
    grad_accum: int | None = None
    vpp: int = 1
    optimizer_in_backward: bool = False
    group_size: int = DEFAULT_GROUP_SIZE
    gpu_util: float | None = None
    reserve: int | None = None
    gpu_memory: int | None = None
    prefill_chunk: int | None = None
    kv_block: int | None = None
    engine: str | None = None
    engine_version: str | None = None
    max_num_seqs: int | None = None
    enforce_eager: bool = False
    keep_16bit: tuple[str, ...] = ()
    weight_format: str | None = None
    parallel: Parallelism = field(default_factory=Parallelism)
    dtype_given: bool = field(init=False, default=False)
    attention_given: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype_given", self.dtype is not None)
        object.__setattr__(self, "attention_given", self.attention_impl is not None)
        object.__setattr__(self, "keep_16bit", tuple(self.keep_16bit))
        object.__setattr__(self, "recompute_modules", tuple(dict.fromkeys(self.recompute_modules)))
        self._resolve_framework()
        self._check_values()
        object.__setattr__(self, "offload", tuple(dict.fromkeys(self.offload)))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        kv_given = self.kv_dtype is not None
        self._resolve_dtypes()
        impl = self.attention_impl or DEFAULT_ATTENTION_IMPL[self.mode]
        check_choice("--attention-impl", impl, ATTENTION_IMPLS)
        object.__setattr__(self, "attention_impl", impl)
        if self.reserve is None:
            object.__setattr__(self, "reserve", DEFAULT_RESERVE[self.mode])
        if self.mode == "infer":
            self._resolve_engine(kv_given)
        util = DEFAULT_GPU_UTIL.get(self.mode) if self.gpu_util is None else self.gpu_util
        if util is not None and not 0 < util <= 1:  # None: the engine works its fraction out itself
            raise SpecError(f"--gpu-util must be in (0, 1], got {util}")
        object.__setattr__(self, "gpu_util", util)
        self._check_combinations()

    def _resolve_framework(self) -> None:
        """The training framework and the defaults it sets for the options the user left unset."""
        if self.mode == "infer":
            given = [flag for flag, key in _FRAMEWORK_ONLY.items() if getattr(self, key) is not None]
            if given:
                raise SpecError(f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to --mode train "
                                "(inference follows --engine)")
            self._fill(optimizer=self.fw.optimizer, recompute="none", lora_targets=self.fw.lora_targets, zero=0)
            return
        name = self.framework or DEFAULT_FRAMEWORK
        check_choice("--framework", name, tuple(FRAMEWORKS))
        fw = FRAMEWORKS[name]
        recompute = fw.qlora_recompute if self.finetune == "qlora" and fw.qlora_recompute else fw.recompute
        optimizer = fw.qlora_optimizer if self.finetune == "qlora" and fw.qlora_optimizer else fw.optimizer
        self._fill(framework=name, optimizer=optimizer, recompute=recompute, loss=fw.loss, zero=fw.zero,
                   lora_targets=fw.lora_targets, lora_dropout=fw.lora_dropout,
                   **({} if self.dtype in ("fp32", "tf32") else {"precision": fw.precision}))
        check_choice("--loss", self.loss, LOSSES)
        if self.loss == "te" and self.framework != "megatron":
            raise SpecError("--loss te is Transformer Engine's fused cross-entropy as Megatron-Core calls it "
                            "(cross_entropy_fusion_impl te); add --framework megatron")
        if not 0 <= self.lora_dropout < 1:
            raise SpecError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")

    def _fill(self, **defaults) -> None:
        """Set each field the user left None to its default."""
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)

    @property
    def micro_batches(self) -> int:
        """The step's micro-batches: --grad-accum; where not stated, enough to fill a pipeline (p), else 1."""
        return self.grad_accum or self.parallel.pp

    @property
    def fw(self) -> Framework:
        return FRAMEWORKS[self.framework or DEFAULT_FRAMEWORK]

    def _resolve_engine(self, kv_given: bool = True) -> None:
        """The engine, its version and its defaults for the knobs the user left unset (``kv_given``: the KV
        cache's dtype was set, not taken from --dtype)."""
        name, version, defaults = resolve_engine(self.engine, self.engine_version, self.kv_dtype, self.parallel.cp,
                                                 self.dtype if self.dtype_given else None, kv_given)
        object.__setattr__(self, "engine", name)
        object.__setattr__(self, "engine_version", version)
        self._fill(**defaults)

    def _check_values(self) -> None:
        check_choice("--mode", self.mode, MODES)
        for key in _WHOLE_NUMBERS + _OPTIONAL_WHOLE_NUMBERS:
            value = getattr(self, key)
            if value is None and key in _OPTIONAL_WHOLE_NUMBERS:
                continue
            _check_whole(key, value)
        check_choice("--optimizer", self.optimizer, tuple(OPTIMIZERS))
        check_choice("--recompute", self.recompute, RECOMPUTE)
        check_module_names(self.recompute_modules)
        if self.recompute_modules != DEFAULT_RECOMPUTE_MODULES and self.recompute != "selective":
            raise SpecError("--recompute-modules needs --recompute selective (Megatron-Core reads them under selective "
                            "granularity only)")
        if self.recompute_modules != DEFAULT_RECOMPUTE_MODULES and self.framework not in (None, "megatron"):
            raise SpecError("--recompute-modules names Megatron-Core's modules; give --framework megatron")
        check_choice("--finetune", self.finetune, FINETUNES)
        if self.loss_dtype is not None:
            check_choice("--loss-dtype", self.loss_dtype, FLOAT_DTYPES)
        check_choice("--zero", self.zero, ZERO_STAGES)
        for item in self.offload:
            check_choice("--offload", item, OFFLOADS)
        if self.reserve is not None and self.reserve < 0:
            raise SpecError(f"--reserve cannot be negative, got {self.reserve}")
        if self.gpu_memory is not None and self.gpu_memory <= 0:
            raise SpecError(f"--gpu-memory must be positive, got {self.gpu_memory}")
        if self.gpu_memory is not None and self.gpu_memory < 2**20:  # no GPU has less than a mebibyte
            raise SpecError(f"--gpu-memory is {self.gpu_memory:,} bytes, under a mebibyte (a bare number is bytes: "
                            "80 is 80 B); write the unit, 80GB or 80GiB")
        if self.bitsandbytes is not None:
            bnb_version(self.bitsandbytes)
        if self.keep_16bit:
            from ..quant import check_patterns

            check_patterns(self.keep_16bit, "--keep-16bit")

    def _check_combinations(self) -> None:
        if self.mode == "train" and DTYPE_BYTES[self.loss_dtype] < DTYPE_BYTES[self.compute_dtype]:
            raise SpecError(f"--loss-dtype {self.loss_dtype} is narrower than the {self.compute_dtype} logits")
        if self.mode == "infer":
            wrong = [flag for flag, given in _TRAIN_ONLY if given(self)]
            if wrong:
                raise SpecError(f"{', '.join(wrong)} only appl{'y' if len(wrong) > 1 else 'ies'} to --mode train")
        else:
            wrong = [flag for flag, key in _INFER_ONLY.items() if getattr(self, key)]
            if wrong:
                raise SpecError(f"{', '.join(wrong)} only appl{'y' if len(wrong) > 1 else 'ies'} to --mode infer "
                                "(the serving engine's settings)")
        self._check_offload()
        self._check_pipeline()
        if self.fp8 is not None or self.fp8_params:
            from .fp8 import check

            check(self)
        _check_seq(self.seq, self.mini_seq, self.parallel.cp, self.prompt, self.balanced_cp)
        if self.optimizer_in_backward and (self.micro_batches > 1 or self.zero or self.fw.persistent_grads
                                           or self.parallel.pp > 1):
            raise SpecError("--optimizer-in-backward steps each gradient as it lands: it cannot accumulate "
                            "(--grad-accum, --pp), shard (--zero) or keep persistent gradient buffers (--framework)")

    def _check_offload(self) -> None:
        if "params" in self.offload and self.zero != 3:
            raise SpecError("--offload params needs --zero 3 (ZeRO-Infinity offloads the sharded parameters)")
        if "activations" in self.offload and self.recompute != "full":
            raise SpecError("--offload activations needs --recompute full (the checkpointed layer inputs are what goes to CPU)")
        if "optimizer" in self.offload and self.zero == 0:
            raise SpecError("--offload optimizer needs --zero 1, 2 or 3 (ZeRO-Offload runs the sharded optimizer on CPU)")
        if "optimizer" in self.offload and OPTIMIZERS[self.optimizer].paged:
            raise SpecError(f"--optimizer {self.optimizer} pages its states itself; drop --offload optimizer")
        n = self.offload_layers
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SpecError(f"--offload-layers is a whole number of layers, at least 0; got {n!r}")
        if self.offload_layers and (self.framework != "megatron" or self.recompute != "none" or self.parallel.pp > 1):
            raise SpecError("--offload-layers is Megatron-Core's activation offloading: it needs --framework megatron, "
                            "--recompute none and no --pp (Megatron refuses it beside recomputation and pipeline "
                            "parallelism: transformer_config.py, core 0.15)")

    def _check_pipeline(self) -> None:
        """A pipeline as its framework runs one: DeepSpeed's PipelineEngine asserts a ZeRO stage below 2
        (runtime/pipe/engine.py: "ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism")."""
        if self.framework == "deepspeed" and self.parallel.pp > 1 and self.zero >= 2:
            raise SpecError(f"DeepSpeed's pipeline engine refuses ZeRO-{self.zero} beside --pp (it asserts a ZeRO "
                            "stage below 2): use --zero 0 or 1 with --pp, or drop --pp")
        self._check_interleaving()

    def _check_interleaving(self) -> None:
        """--vpp: Megatron-Core's interleaved schedule, over a pipeline, its micro-batches in whole groups of p
        (microbatch_group_size_per_vp_stage, pp by default; schedules.py refuses a remainder smaller than p)."""
        pp = self.parallel.pp
        if self.vpp == 1:
            return
        if pp == 1:
            raise SpecError(f"--vpp {self.vpp} interleaves a pipeline's stages: it needs --pp 2 or more")
        if self.framework != "megatron":
            raise SpecError("--vpp is Megatron-Core's interleaved 1F1B (virtual_pipeline_model_parallel_size): "
                            "add --framework megatron")
        if self.micro_batches % pp:
            raise SpecError(f"--vpp runs the micro-batches in groups of --pp {pp}: --grad-accum {self.micro_batches} "
                            f"is not a multiple of {pp} (Megatron-Core refuses a remainder below the group, as plan does)")

    def _resolve_dtypes(self) -> None:
        dtype, precision = self.dtype, self.precision
        if dtype is not None:
            check_choice("--dtype", dtype, DTYPES)
        if self.mode == "train":
            precision, dtype = train_precision(precision, dtype, self.finetune)
        elif precision is not None:
            raise SpecError("--precision only applies to --mode train (use --dtype for inference weights)")
        dtype = dtype or "bf16"
        kv = self.kv_dtype or activation_dtype(dtype)
        check_choice("--kv-dtype", kv, DTYPES)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "kv_dtype", kv)
        if self.loss_dtype is None:  # the framework's: fp32 where its loss upcasts, else the compute dtype
            object.__setattr__(self, "loss_dtype", self.fw.loss_dtype or self.compute_dtype)

    def at(self, seq: int | None = None, batch: int | None = None) -> MemorySettings:
        """These settings at another seq and batch, the two checked as the constructor checks them, in its
        order; nothing the constructor resolves depends on either, so the rest is copied as it is (a
        sweep's points without resolving the same options again)."""
        seq = self.seq if seq is None else seq
        batch = self.batch if batch is None else batch
        _check_whole("seq", seq)
        _check_whole("batch", batch)
        _check_seq(seq, self.mini_seq, self.parallel.cp, self.prompt, self.balanced_cp)
        copy = object.__new__(MemorySettings)
        object.__setattr__(copy, "__dict__", {**self.__dict__, "seq": seq, "batch": batch})
        return copy

    @property
    def balanced_cp(self) -> bool:
        """Context parallelism as Megatron-Core trains: the sequence in 2 x cp equal chunks, two per rank."""
        return self.framework == "megatron" and self.mode == "train" and self.parallel.cp > 1

    @property
    def compute_dtype(self) -> str:
        """The dtype activations are stored in: fp32 under precision fp32, bf16 for an fp32 frozen base
        under mixed precision (autocast), else the activation dtype of ``dtype`` (a quantized frozen
        base or weight-only inference computes in 16-bit)."""
        if self.mode == "train" and self.finetune == "full" and self.precision == "fp32":
            return self.fw.compute_dtype or "fp32"  # FSDP's MixedPrecisionPolicy computes fp32 weights in bf16
        return "bf16" if self.autocast_base else activation_dtype(self.dtype)

    @property
    def autocast_base(self) -> bool:
        """LoRA over an fp32 frozen base with mixed precision: the matmuls run under bf16 autocast
        (LitGPT's bf16-mixed, the HF Trainer's bf16=True over an fp32 model)."""
        return (self.mode == "train" and self.finetune == "lora" and self.dtype in ("fp32", "tf32")
                and self.precision in ("mixed", "mixed-fp32-grads"))

    @property
    def bnb_keeps_input(self) -> bool:
        """Whether bitsandbytes' MatMul4Bit keeps its input for backward (releases before 0.43.2)."""
        return self.bitsandbytes is not None and bnb_version(self.bitsandbytes) < BNB_DROPS_INPUT


def _check_whole(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        flag = KNOB_FLAGS.get(key, "--" + key.replace("_", "-"))
        raise SpecError(f"{flag} must be a whole number of at least 1, got {value!r}")


def _check_seq(seq: int, mini_seq: int, cp: int, prompt: int | None, balanced: bool = False) -> None:
    """What one sequence must hold: the Mini-Sequence chunks, the prompt, a token for each CP rank; ``balanced``
    (Megatron-Core training), 2 x cp equal chunks (get_batch_on_this_cp_rank views it so, for causal balance)."""
    for flag, value in (("--mini-seq", mini_seq), ("--prompt", prompt or 0)):
        if value > seq:
            raise SpecError(f"{flag} {value} cannot exceed --seq {seq}")
    if cp > seq:
        raise SpecError(f"--cp {cp} splits a {seq}-token sequence: each rank needs a token at least")
    if balanced and cp > 1 and seq % (2 * cp):
        raise SpecError(f"--cp {cp} must split the {seq:,}-token sequence into 2 x {cp} equal chunks (Megatron-Core's "
                        f"causal load balancing): give a --seq that is a multiple of {2 * cp}")


def bnb_version(text) -> tuple[int, ...]:
    """'0.42.0' -> (0, 42, 0) (engines.parse_version); a malformed version is a usage error."""
    from .engines import parse_version

    return parse_version(text, "--bitsandbytes")
