"""`plan`'s activation offloading (Megatron's cpu_offloading_num_layers on Transformer Engine's CPU offload): the
exposed copies by hand, the NIC's share of the host link by hand, the fewest layers the search offloads against
NVIDIA's own recipe, and the option's refusals through the real CLI."""

from __future__ import annotations

import pytest

from llmcalc.exposure import host_rate, offload_exposed, offload_windows
from llmcalc.plan import Constraints, Planner, Target
from llmcalc.steptime import Layout, Links, MicroBatch

from .conftest import run, run_json

LINKS = Links(peak=1e15, peak16=1e15, hbm=2e12, node_gpus=8, intra=400e9, inter=50e9, efficiency=0.7, attention=0.3,
              host=53e9)


def _micro(forward: float) -> MicroBatch:
    """A micro-batch whose layers' forward (GEMMs + attention core + memory-bound kernels) takes ``forward`` s."""
    return MicroBatch(gemm=0, attention=0, elementwise=0.2 * forward, head=0, redo=0, tp=0, cp=0, ep=0, send=0,
                      gemm_forward=0.6 * forward, core_forward=0.2 * forward)


def test_windows_as_transformer_engine_marks_them():
    """TE 2.8's layer_window_map: mark i at (L // n)(i + 1) - 1, the first L % n marks i + 1 later and the rest as late
    as the last of those; each copy runs from one mark to the next (the first from the start). 80 layers, 40
    offloaded: marks 1, 3, ..., 79; 41 offloaded: marks 1, 3, ..., 77 (the first 39), then 78, 79."""
    assert offload_windows(80, 40) == [1] + [2] * 39
    assert offload_windows(80, 41) == [1] + [2] * 38 + [1, 1]
    assert offload_windows(80, 5) == [15, 16, 16, 16, 16]  # marks 15, 31, 47, 63, 79
    assert all(sum(offload_windows(126, n)) == 125 for n in range(1, 126))  # the last mark is the last layer


def test_exposed_copies_by_hand():
    """20 of 40 layers offloaded, 4 GB a layer at 50 GB/s: each copy takes 80 ms. A layer's forward is 25 ms (1 s for
    the 40). The first copy's window is one layer: 55 ms exposed going out, 30 ms coming back (under 50 ms of
    backward); the other 19 have two layers: 30 ms out, nothing back (100 ms of backward). Four micro-batches."""
    lay = Layout(tp=1, pp=1, dp=8, micro_batches=4, offload=20)
    assert offload_exposed(lay, _micro(1.0), 40, 4e9, 50e9) == pytest.approx(4 * (0.055 + 0.030 + 19 * 0.030))
    # a slower link exposes both ways: 160 ms against 25 and 50 (one layer), 50 and 100 (two)
    assert offload_exposed(lay, _micro(1.0), 40, 4e9, 25e9) == pytest.approx(4 * (0.135 + 0.110 + 19 * (0.110 + 0.060)))
    assert offload_exposed(lay._replace(offload=0), _micro(1.0), 40, 4e9, 50e9) == 0


def test_the_nic_takes_its_share_of_the_host_link():
    """ZeRO-3 over 64 GPUs (8 nodes): each micro-batch gathers twice (200 ms each) and reduce-scatters once (100 ms)
    through the NIC, 500 ms of a 1 s micro-batch; for that half the copies get what the NIC's 50 GB/s leaves of 53,
    but at least half the link (26.5), the rest of the time all 53."""
    lay = Layout(tp=1, pp=1, dp=64, zero=3, micro_batches=2)
    assert host_rate(lay, LINKS, 1.0, (0.1, 0.2)) == pytest.approx(0.5 * 53e9 + 0.5 * 26.5e9)
    assert host_rate(lay, LINKS._replace(inter=12.5e9), 1.0, (0.1, 0.2)) == pytest.approx(0.5 * 53e9 + 0.5 * 40.5e9)
    assert host_rate(lay._replace(dp=8), LINKS, 1.0, (0.1, 0.2)) == 53e9  # one node: no NIC traffic
    # ZeRO-1: the reduce-scatter and the all-gather once a step, 300 ms of the 2 s step
    assert host_rate(lay._replace(zero=1), LINKS, 1.0, (0.1, 0.2)) == pytest.approx(0.85 * 53e9 + 0.15 * 26.5e9)


def _gb200_70b() -> tuple[Planner, Layout]:
    """Megatron-Bridge 25.11's Llama 3 70B FP8 run on 64 GB200s: TP 1, Megatron FSDP 64, two 8k sequences a
    micro-batch, two micro-batches, no recomputation (v0.2.0 scripts/performance/configs/llama3/
    workload_base_configs.py, LLAMA3_70B_GB200_FP8_CS_BASE_CONFIG; the table's global batch of 256)."""
    from llmcalc.cluster import cluster_of
    from llmcalc.presets import load_gpu, load_model

    m = load_model("llama-3-70b")
    cons = Constraints(tp=1, pp=1, cp=1, micro_batch=2, zero=3, recompute="none", grad_reduce="bf16", loss="te",
                       fp8_recipe="current", fp8_params=True)
    p = Planner(m, cluster_of(load_gpu("gb200")), Target(gpus=64, seq=8192, global_batch=256, dtype="fp8"), cons)
    (lay,) = [x for x in p.fitting((1, 1, 1, 64, 1))]
    return p, lay


def test_the_fewest_layers_that_fit_are_near_nvidias_recipe():
    """The recipe offloads 40 of the 80 layers (cpu_offloading_num_layers=40); the memory model needs 41 (a layer's
    3.5 GiB of activations more than it fits by), and 40 leaves it over: the search takes the fewest that fit."""
    p, lay = _gb200_70b()
    assert 40 <= lay.offload <= 42
    assert p.fits(lay) and not p.fits(lay._replace(offload=lay.offload - 1))
    assert not p.fits(lay._replace(offload=0))
    # over NVLink-C2C (173 GB/s; the DP group is one NVLink domain of GB200's 72, so no NIC traffic) each 3.5 GiB copy
    # hides under two layers' compute, not under one: at 41 layers offloaded, three of TE's windows are one layer
    # long (test_windows_as_transformer_engine_marks_them), each exposing what its copy outlasts of that layer's forward
    mb = p.micro(lay)
    copy, forward = p.layer_bytes(lay) / 173e9, mb.layers_forward / 80
    assert copy < 2 * forward and lay.offload == 41
    assert p.time(lay).offload == pytest.approx(2 * 3 * (copy - forward))
    # the same layout timed as recomputing everything instead is a third slower
    assert p.time(lay._replace(offload=0, recompute="full")).total > 1.25 * p.time(lay).total


def test_a_slow_host_link_exposes_the_copies():
    """The same run with the GPU's host link at PCIe Gen4 speed (20 GB/s): each copy outlasts its window."""
    p, lay = _gb200_70b()
    slow = Planner(p.m, p.cluster, p.t, p.c)
    slow.links = slow.links._replace(host=20e9)
    assert slow.time(lay).offload > 0


ARGS = ("plan", "--model", "llama-3-70b", "--gpu", "gb200", "--gpus", "64", "--seq", "8k", "--global-batch", "256")


def test_a_fixed_count_is_every_layouts():
    data = run_json(*ARGS, "--offload-layers", "44", "--top", "3")
    layouts = data["summary"]["layouts"]
    assert layouts and all(x["offload"] == 44 and x["pp"] == 1 and x["recompute"] == "none" for x in layouts)
    assert all(x["layout"].endswith("offload44") for x in layouts)


def test_zero_rules_it_out():
    data = run_json(*ARGS, "--offload-layers", "0", "--top", "8")
    assert all(x["offload"] == 0 for x in data["summary"]["layouts"])


@pytest.mark.parametrize("extra, says", [
    (("--offload-layers", "10", "--pp", "2"), "one pipeline stage"),
    (("--offload-layers", "10", "--recompute", "full"), "without recomputation"),
    (("--offload-layers", "80"), "below the model's 80 layers"),
    (("--offload-layers", "ten"), "number of layers or auto"),
    (("--offload-layers", "-3"), "number of layers or auto"),
    (("--offload-layers", "1_0"), "number of layers or auto"),
    (("--offload-layers", "10", "--vpp", "2"), "drop --vpp 2"),
    (("--offload-layers", "10", "--cp", "2"), "context-parallel attention"),
    (("--offload-layers", "10", "--dp", "48"), "with --dp 48, --offload-layers 10"),
    (("--offload-layers", "10", "--attention-kernel", "unfused"), "unfused attention marks none"),
])
def test_refusals(extra, says):
    """Each a one-line error, exit 2."""
    out = run(*ARGS, *extra)
    assert out.exit_code == 2 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_gpu_without_a_host_link_figure():
    """No host_gb_s in the preset: nothing is offloaded unasked, and a fixed count is refused with the fix."""
    out = run("plan", "--model", "llama-2-7b", "--gpu", "l40s", "--gpus", "8", "--offload-layers", "4")
    assert out.exit_code == 2 and "host_gb_s" in out.stderr
    data = run_json("plan", "--model", "llama-2-7b", "--gpu", "l40s", "--gpus", "8", "--top", "8")
    assert all(x["offload"] == 0 for x in data["summary"]["layouts"])


def test_a_layout_that_fits_only_offloaded_is_found():
    """Without recomputation the run fits only by offloading: the search still finds it (its leanest variant, with
    nothing offloaded, does not fit), and the fewest GPUs a refusal would name count offloading too."""
    data = run_json(*ARGS, "--dtype", "fp8", "--fp8-recipe", "current", "--fp8-params", "--loss", "te",
                    "--recompute", "none", "--tp", "1", "--cp", "1", "--micro-batch", "2")
    (best, *_) = data["summary"]["layouts"]
    assert best["offload"] >= 40 and best["dp"] == 64


def test_the_host_rate_needs_no_timing_first():
    p, lay = _gb200_70b()
    fresh = Planner(p.m, p.cluster, p.t, p.c)
    assert fresh.host_rate(lay, fresh.micro(lay)) == 173e9  # the DP group within one 72-GPU NVLink domain


def test_moe_models_are_not_offloaded():
    """Transformer Engine 2.8 keeps its grouped experts' saved tensors on the GPU (their GEMMs mark none for
    offloading): not modelled, so not searched, and a fixed count is refused."""
    args = ("plan", "--model", "mixtral-8x7b", "--gpu", "gb200", "--gpus", "64", "--seq", "4k")
    assert all(x["offload"] == 0 for x in run_json(*args, "--top", "8")["summary"]["layouts"])
    out = run(*args, "--offload-layers", "8")
    assert out.exit_code == 2 and "routed experts" in out.stderr


def test_memory_says_its_moe_offload_is_an_underestimate():
    """`memory --offload-layers` moves whole layers; for routed experts that undercounts what stays, and says so."""
    args = ("memory", "--model", "deepseek-v3", "--mode", "train", "--framework", "megatron", "--recompute", "none",
            "--gpus", "64", "--ep", "64", "--seq", "2k")
    assert any("underestimate" in n for n in run_json(*args, "--offload-layers", "10")["notes"])
    assert not any("underestimate" in n for n in run_json(*args)["notes"])


def test_the_host_memory_is_what_the_memory_model_sends():
    """Each offloaded layout says what waits in host memory per GPU: the memory command's cpu/activations for the same
    layout (41 layers of Llama 3 70B at 2 x 8k tokens, FP8 inputs: 3.5 GiB each)."""
    data = run_json(*ARGS, "--dtype", "fp8", "--fp8-recipe", "current", "--fp8-params", "--loss", "te",
                    "--grad-reduce", "bf16", "--tp", "1", "--cp", "1", "--micro-batch", "2", "--top", "2")
    best = data["summary"]["layouts"][0]
    memory = run_json("memory", "--model", "llama-3-70b", "--mode", "train", "--framework", "megatron", "--gpu",
                      "gb200", "--gpus", "64", "--dp", "64", "--zero", "3", "--seq", "8192", "--batch", "2", "--fp8",
                      "current", "--fp8-params", "--loss", "te", "--precision", "mixed", "--offload-layers",
                      str(best["offload"]))
    sent = next(r["value"] for r in memory["rows"] if r["name"] == "cpu/activations")
    assert best["offload"] == 41 and best["host_memory"] == pytest.approx(sent, rel=1e-3)
    assert best["host_memory"] == pytest.approx(41 * 3.5 * 2**30, rel=0.01)
    assert all(x["host_memory"] == 0 for x in data["summary"]["layouts"] if not x["offload"])


def test_host_memory_bounds_what_is_offloaded():
    """A DGX H100 has 2 TB for its 8 GPUs (256 GiB each): at 32k tokens a 70B layer saves about 8 GiB a sequence on
    one GPU, so offloading enough of its 80 layers to fit would fill several times that; no layout listed does."""
    data = run_json("plan", "--model", "llama-3-70b", "--gpu", "h100", "--gpus", "64", "--seq", "32k",
                    "--global-batch", "64", "--top", "8")
    assert all(x["host_memory"] <= 256 * 2**30 for x in data["summary"]["layouts"])
    assert data["inputs"]["offload"] == "auto"


def test_without_a_host_memory_figure_nothing_is_offloaded_unasked():
    """The H100 PCIe card has a host link (PCIe Gen5) but no reference node, so no host memory: the search leaves
    offloading out, and a fixed count is taken as asked."""
    args = ("plan", "--model", "llama-3-70b", "--gpu", "h100-pcie", "--gpus", "64", "--seq", "8k", "--top", "8")
    assert all(x["offload"] == 0 for x in run_json(*args)["summary"]["layouts"])
    assert all(x["offload"] == 30 for x in run_json(*args, "--offload-layers", "30")["summary"]["layouts"])


def test_the_api_takes_the_cli_name():
    import llmcalc

    fixed = llmcalc.plan("llama-3-70b", gpu="gb200", gpus=64, seq="8k", global_batch=256, offload_layers="44", top=2)
    assert all(x["offload"] == 44 for x in fixed.summary["layouts"])
    assert llmcalc.plan("llama-3-70b", gpu="gb200", gpus=64, seq="8k", global_batch=256, offload=44,
                        top=1).summary["layouts"][0]["offload"] == 44
    assert llmcalc.plan("llama-3-70b", gpu="gb200", gpus=64, seq="8k", global_batch=256, offload_layers="auto",
                        top=1).summary["found"]
