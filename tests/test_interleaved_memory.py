"""`memory --vpp`: Megatron-Core's interleaved 1F1B, the micro-batches a stage holds, and `plan`'s memory for an
interleaved layout read back from the memory command."""

from __future__ import annotations

import pytest

from llmcalc.memory.placement import pipeline_in_flight

from .conftest import run, run_json

TRAIN = ("memory", "--model", "llama-3-70b", "--mode", "train", "--framework", "megatron", "--gpu", "h100")


@pytest.mark.parametrize("pp, vpp, stage, micro_batches, held", [
    (4, 1, 0, 8, 4), (4, 1, 3, 8, 1),  # 1F1B: p - i
    # Megatron-Core's warm-up, 2(p - i - 1) + (v - 1)p chunks, plus the one running, each 1/v of the rank's layers:
    (4, 2, 0, 8, (2 * 3 + 1 * 4 + 1) / 2),  # 5.5 = p + (p - 1)/v
    (4, 2, 3, 8, (0 + 1 * 4 + 1) / 2),  # the last rank: 2.5
    (16, 7, 0, 64, 16 + 15 / 7),
    (4, 2, 0, 4, 4),  # four micro-batches of two chunks each: all eight forwards run before the first backward
])
def test_micro_batches_in_flight_by_hand(pp, vpp, stage, micro_batches, held):
    assert pipeline_in_flight(pp, vpp, stage, micro_batches) == pytest.approx(held)


def test_plans_interleaved_layout_reads_the_same_from_memory():
    """plan's fastest layout for Llama 3 70B on 8 DGX H100s at 8k tokens, fixed at PP 4 x VPP 5, given to `memory`
    as Megatron-Core runs it: the same bytes per GPU, and more than the same layout without interleaving."""
    plan = run_json("plan", "--model", "llama-3-70b", "--cluster", "dgx-h100", "--nodes", "8", "--seq", "8k",
                    "--pp", "4", "--vpp", "5", "--cp", "1", "--recompute", "none", "--zero", "1", "--top", "1")
    best = plan["summary"]["layouts"][0]
    assert (best["pp"], best["vpp"], best["cp"], best["ep"], best["micro_batch"]) == (4, 5, 1, 1, 1)
    args = (*TRAIN, "--gpus", "64", "--tp", str(best["tp"]), "--pp", "4", "--seq", "8192",
            "--grad-accum", str(best["grad_accum"]), "--recompute", "none", "--zero", "1", "--attention-impl", "flash",
            *(["--sp"] if best["sp"] else []))
    interleaved, plain = run_json(*args, "--vpp", "5"), run_json(*args)
    assert interleaved["summary"]["total"] == pytest.approx(best["memory"], rel=1e-6)
    assert interleaved["summary"]["in_flight"] == pytest.approx(4 + 3 / 5)
    assert interleaved["inputs"]["vpp"] == 5 and "vpp" not in plain["inputs"]
    assert plain["summary"]["in_flight"] == 4 and plain["summary"]["total"] < interleaved["summary"]["total"]
    assert any("interleaved 1F1B, 5 virtual stages a rank" in n for n in interleaved["notes"])


@pytest.mark.parametrize("args, why", [
    (("--gpus", "8", "--vpp", "2"), "--vpp 2 interleaves a pipeline's stages: it needs --pp 2 or more"),
    (("--gpus", "8", "--pp", "4", "--vpp", "30"), "--vpp 30 gives 120 virtual stages over --pp 4, more than"),
    (("--gpus", "8", "--pp", "4", "--vpp", "2", "--grad-accum", "2"), "--grad-accum 2 is not a multiple of 4"),
    (("--gpus", "8", "--pp", "4", "--vpp", "2", "--grad-accum", "6"), "--grad-accum 6 is not a multiple of 4"),
])
def test_impossible_interleaving_is_refused(args, why):
    out = run(*TRAIN, *args)
    assert out.exit_code == 2 and why in out.stderr, out.output


def test_interleaving_is_megatrons_and_a_training_schedule():
    out = run("memory", "--model", "llama-3-8b", "--mode", "train", "--gpus", "8", "--pp", "4", "--vpp", "2")
    assert out.exit_code == 2 and "add --framework megatron" in out.stderr
    out = run("memory", "--model", "llama-3-8b", "--mode", "infer", "--gpus", "8", "--pp", "4", "--vpp", "2")
    assert out.exit_code == 2 and "--vpp only applies to --mode train" in out.stderr


def test_an_uneven_virtual_split_says_how_megatron_runs_it():
    """80 layers over 4 x 3 virtual stages: 6.67 a chunk, which Megatron-Core takes only with an explicit layout."""
    d = run_json(*TRAIN, "--gpus", "32", "--tp", "8", "--pp", "4", "--vpp", "3", "--grad-accum", "8")
    assert any(n.startswith("80 layers do not split evenly over 4 stages x 3 virtual") for n in d["notes"])
    even = run_json(*TRAIN, "--gpus", "32", "--tp", "8", "--pp", "4", "--vpp", "5", "--grad-accum", "8")
    assert not any("evenly" in n for n in even["notes"])
