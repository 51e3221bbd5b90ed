"""Does a GPU keep its matmul rate under a sustained load? Runs bf16 (then FP8) GEMMs back to back for a minute
and samples the achieved rate with the SM clock, power draw and temperature (NVML) every batch.

Not part of the test suite. Run on a machine with a GPU, torch and nvidia-ml-py:

    python scripts/measure_sustained_cuda.py OUT.json [SECONDS]

NVML is read for the machine's GPU 0: run it with that GPU the only one visible (CUDA_VISIBLE_DEVICES unset).
NVML's power reading on an H100 is a one-second average.

A short benchmark runs at the boost clock; a training step holds the tensor cores busy for minutes, where the
power limit may pull the clock down. The JSON it writes is kept as test data (tests/data/gpu_sustained.json).
"""

from __future__ import annotations

import sys
import time

import pynvml
import torch

from measure_kernels_cuda import write  # this folder's: rows one to a line, as tests/data keeps them

KEEP = 10  # every tenth batch's row is written (and the last)


def sample(handle) -> dict:
    return {"sm_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
            "temp_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)}


def sustained(handle, dtype: str, seconds: float, n: int = 8192, batch: int = 20) -> list[dict]:
    """Back-to-back n x n x n GEMMs in ``batch``es; one row per batch: elapsed seconds, TFLOP/s, NVML sample."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    if dtype == "fp8":
        fa, fb, one = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn), torch.ones((), device="cuda")

        def gemm():
            return torch._scaled_mm(fa, fb.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    else:
        def gemm():
            return a @ b
    for _ in range(3):
        gemm()
    torch.cuda.synchronize()
    rows, start = [], time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(batch):
            gemm()
        end.record()
        end.synchronize()
        rate = batch * 2 * n ** 3 / (begin.elapsed_time(end) / 1e3) / 1e12
        rows.append({"t": round(now - start, 3), "tflops": round(rate, 1), **sample(handle)})
    return rows


def main() -> None:
    out = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    info = {"script": "scripts/measure_sustained_cuda.py", "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0),
            "power_limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1e3,
            "max_sm_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM), "idle": sample(handle)}
    for dtype, length in (("bf16", seconds), ("fp8", seconds / 2)):
        rows = sustained(handle, dtype, length)
        info[dtype] = rows[::KEEP] + ([rows[-1]] if (len(rows) - 1) % KEEP else [])
    write(out, info)
    for dtype in ("bf16", "fp8"):
        for r in info[dtype][::2]:
            print(dtype, r)


if __name__ == "__main__":
    main()
