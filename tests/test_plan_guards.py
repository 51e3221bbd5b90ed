"""`plan`: what a user audit found it accepting, ignoring or answering oddly, each held here through the CLI."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import run

NODE = ("--cluster", "dgx-h100", "--nodes", "1")


def plan_json(*args: str) -> dict:
    out = run("plan", *args, "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


@pytest.mark.parametrize("args, why", [
    (("--model", "llama-3-8b", "--gpu", "h100", "--gpus", "24", "--cp", "3", "--seq", "8k"),
     "--cp 3 must split the 8,192-token sequence into 2 x 3 equal chunks"),
    (("--model", "llama-3-8b", *NODE, "--cp", "8", "--seq", "1000"), "--cp 8 must split the 1,000-token sequence"),
    (("--model", "llama-3-70b", "--cluster", "dgx-h100", "--nodes", "16", "--pp", "16", "--vpp", "8"),
     "--vpp 8 gives 128 virtual stages over --pp 16, more than llama-3-70b's 80 layers"),
    (("--model", "llama-3-70b", "--cluster", "dgx-h100", "--nodes", "16", "--pp", "16", "--vpp", "2",
      "--global-batch", "24"), "interleaving, --vpp 2, also needs each DP rank's micro-batches a multiple of PP"),
    (("--model", "llama-3-8b", *NODE, "--sweep", "explain=true,false"), "--sweep 'explain=true,false': give NAME"),
    (("--model", "llama-3-8b", *NODE, "--sweep", "png=a.png"), "one of this command's options: attention-kernel"),
    # 4.2 x 2^20 = 4,404,019.2: the M of a length, not of --tokens' decimal count
    (("--model", "llama-3-8b", *NODE, "--batch-tokens", "4.2M"), "got '4.2M' (4,404,019.2 tokens: k and M are 1024"),
    (("--model", "llama-3-8b", *NODE, "--global-batch", "4M"), "got '4M'; for 4M tokens a step give --batch-tokens 4M"),
    (("--model", "llama-3-8b", *NODE, "--tp", "8", "--max-tp", "4"), "--tp 8 is above --max-tp 4: give one of them"),
    # 1,000 = 2^3 x 5^3: with DP a power of two (a 512-sequence batch) the 5^3 falls to PP, past the 32 layers
    (("--model", "llama-3-8b", "--gpu", "h100", "--gpus", "1000"), "fixed degree (992 or 1,024 GPUs would)"),
])
def test_impossible_asks_are_one_line_refusals(args, why):
    out = run("plan", *args)
    assert out.exit_code == 2 and why in out.stderr and "Traceback" not in out.output, out.output


def test_tp_options_without_tensor_parallelism_say_they_do_nothing():
    from llmcalc.cli.common import UnusedOption

    with pytest.warns(UnusedOption) as said:
        assert run("plan", "--model", "llama-3-8b", *NODE, "--tp", "1", "--sp", "--tp-overlap").exit_code == 0
    messages = " ".join(str(w.message) for w in said)
    assert "--sp has no effect with --tp 1" in messages and "--tp-overlap has no effect with --tp 1" in messages


def test_ep_overlap_where_megatron_refuses_it_is_said_and_timed_exposed():
    args = ("--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--nodes", "2", "--ep", "8", "--pp", "2", "--vpp", "1")
    with_it, without = plan_json(*args, "--ep-overlap"), plan_json(*args)
    assert any("--ep-overlap does not apply to" in n for n in with_it["notes"])
    assert with_it["summary"]["step_time"] == without["summary"]["step_time"]


def test_the_default_batch_is_a_power_of_two_within_4m_tokens():
    """4 x 2^20 tokens / 6,144 = 682.7 sequences (2 x 11 x 31 at most): 512, which any power-of-two DP divides."""
    d = plan_json("--model", "llama-3-8b", "--cluster", "dgx-h100", "--nodes", "8", "--seq", "6k")
    assert d["inputs"]["global_batch"] == 512
    assert plan_json("--model", "llama-3-8b", *NODE, "--seq", "8k")["inputs"]["global_batch"] == 512  # 2^22 / 2^13


def test_zero3s_exposed_traffic_grows_with_the_micro_batches():
    """Each ZeRO-3 micro-batch waits for its first layer's gather and its last layer's reduce-scatter: at 16 and 64
    micro-batches of one sequence those edges (m / 80 layers of the traffic) outweigh the step's 10% floor, so four
    times the micro-batches expose four times the traffic."""
    args = ("--model", "llama-3-70b", "--cluster", "dgx-h100", "--nodes", "8", "--tp", "2", "--pp", "1", "--cp", "1",
            "--zero", "3", "--micro-batch", "1", "--recompute", "full", "--global-batch")

    def dp_comm(batch: str) -> float:
        return next(r["value"] for r in plan_json(*args, batch)["rows"] if r["name"] == "dp_comm")

    assert dp_comm("2048") == pytest.approx(4 * dp_comm("512"), rel=1e-6)


def test_a_missed_deadline_names_a_power_of_two_of_nodes():
    """405B at 8k on 12 DGX nodes, 15T tokens in 30 days: no count meets it with a 512-sequence batch; the counts
    tried are 8 x 2^k GPUs, which the batch's DP can split, where 96 x 2^k carry a factor 3 it cannot."""
    out = run("plan", "--model", "llama-3.1-405b", "--cluster", "dgx-h100", "--nodes", "12", "--seq", "8k",
              "--tokens", "15T", "--max-days", "30", "--check", "--json")
    assert out.exit_code == 1
    note = next(n for n in json.loads(out.stdout)["notes"] if n.startswith("within 30 days"))
    gpus = int(re.search(r"batch; ([\d,]+) GPUs train", note).group(1).replace(",", ""))
    assert gpus % 8 == 0 and (gpus // 8) & (gpus // 8 - 1) == 0, note
    # 8,192 GPUs: 132 days; 16,384: 158; 32,768: 132; 65,536: 118.5, the third doubling in a row to gain under a
    # tenth, so the search stops there; past 8,192 no count gains a tenth a doubling (65,536 would need 96 days)
    assert gpus == 8_192 and "8,192 GPUs train in 132 days at 42.5% MFU, past which more GPUs cut under a tenth" in note, note


def test_past_where_doubling_pays_the_count_is_the_fewest():
    from llmcalc.fewest import stops_paying

    # by hand: 8 -> 16 halves the time; 16 -> 64 cuts 10 to 9, under 0.9^2 = 0.81 of 10; 16 is where it stops paying
    assert stops_paying({8: 20.0, 16: 10.0, 32: 11.0, 64: 9.0}) == 16
    assert stops_paying({8: 20.0, 16: 10.0, 32: 8.9}) == 32  # 16 -> 32 cut more than a tenth
    assert stops_paying({8: 20.0, 16: float("inf")}) == 8  # no layout fits at 16


def test_a_deadline_met_only_past_the_batchs_reach_says_so():
    """Llama 3 70B, 15T tokens in 30 days, the default 512-sequence batch: met on 41,984 GPUs at 7% MFU, where 512
    GPUs run at 55%: the note says the batch leaves them idle."""
    out = run("plan", "--model", "llama-3-70b", "--cluster", "dgx-h100", "--nodes", "64", "--seq", "8k", "--tokens",
              "15T", "--max-days", "30", "--check", "--json")
    note = next(n for n in json.loads(out.stdout)["notes"] if n.startswith("within 30 days"))
    assert out.exit_code == 1 and "at 7.3% MFU" in note and "batch leaves that many GPUs idle" in note, note


def test_a_batch_too_small_for_the_cluster_is_said():
    """DeepSeek-V3 at 4k on 16,384 H100s: 1,024 sequences over 1,024 DP ranks leave one micro-batch a pipeline of 2,
    so fill and drain take (p-1)/(m + p-1) = half its micro-batch time; the note gives the bubble's share."""
    d = plan_json("--model", "deepseek-v3", "--gpu", "h100", "--gpus", "16384", "--seq", "4k")
    rows = {r["name"]: r["value"] for r in d["rows"]}
    note = next(n for n in d["notes"] if "batch leaves each of the" in n)
    assert f"the bubble is {rows['bubble'] / d['summary']['step_time']:.0%} of the step" in note
    assert not any("batch leaves each of the" in n for n in plan_json("--model", "llama-3-8b", *NODE)["notes"])


def test_inputs_name_the_gpu_and_a_cluster_preset_only_when_one_was_given():
    by_gpu = plan_json("--model", "llama-3-8b", "--gpu", "h100", "--gpus", "8")["inputs"]
    by_cluster = plan_json("--model", "llama-3-8b", *NODE)["inputs"]
    assert (by_gpu["gpu"], by_gpu["cluster"]) == ("h100-sxm", None)  # --gpu's reference node is no cluster preset
    assert (by_cluster["gpu"], by_cluster["cluster"]) == ("h100-sxm", "dgx-h100")


def test_a_deadline_is_answered_when_the_cluster_is_too_small():
    """Llama 3.1 8B on one H100 does not fit (16 bytes a parameter of states alone); the smallest count that does,
    2, trains 10B tokens in a week, so it is the answer to --max-days 30 as well (the user audit's question)."""
    out = run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "1", "--seq", "8k", "--tokens", "10B",
              "--max-days", "30", "--check", "--json")
    d = json.loads(out.stdout)
    assert out.exit_code == 1 and d["summary"]["min_gpus"] == d["summary"]["gpus_within"] == 2
    assert d["summary"]["train_time_within"] < 30 * 86400
    assert "(2 GPUs would meet --max-days)" in out.stderr
    d = json.loads(run("plan", "--model", "llama-3.1-405b", "--gpu", "h100", "--gpus", "8", "--tokens", "15T",
                       "--max-days", "30", "--check", "--json").stdout)
    assert d["summary"]["min_gpus"] == 96 and any(n.startswith("within 30 days: no GPU count") for n in d["notes"])


def test_the_fewest_gpus_name_the_options_they_depend_on():
    d = plan_json("--model", "llama-3-70b", "--gpu", "h100", "--gpus", "8", "--micro-batch", "16")
    assert any("the fewest GPUs any layout fits on with --micro-batch 16: 24" in n for n in d["notes"])
    d = plan_json("--model", "llama-3-70b", "--gpu", "h100", "--gpus", "64", "--max-tp", "1", "--pp", "1", "--cp", "1",
                  "--recompute", "none", "--offload-layers", "0")  # offloading ruled out is one of them
    assert any("none fits on any count with --pp 1, --cp 1, --max-tp 1, --offload-layers 0, --recompute none" in n
               for n in d["notes"])


def test_csv_keeps_its_header_when_nothing_fits():
    with pytest.warns(UserWarning, match="no layout fits 8 x h100-sxm"):
        empty = run("plan", "--model", "llama-3.1-405b", "--gpu", "h100", "--gpus", "8", "--csv")
    full = run("plan", "--model", "llama-3-8b", "--gpu", "h100", "--gpus", "8", "--csv", "--top", "1")
    assert empty.stdout.splitlines() == full.stdout.splitlines()[:1]  # the same columns, no rows
    assert empty.stdout.startswith("kind,model,layout,step_time,mfu,memory,")


def test_the_fewest_gpus_let_dp_follow_the_count():
    """--dp 16 on 16 GPUs leaves TP, PP and CP at 1, which 70B does not fit; the search for the fewest lets DP follow
    each count (TP 2 x DP 8 fits 16), and says so rather than naming --dp 16 as a condition it kept."""
    d = plan_json("--model", "llama-3-70b", "--gpu", "h100", "--gpus", "16", "--dp", "16")
    note = next(n for n in d["notes"] if n.startswith("no layout fits"))
    assert "fits on: 16 (whole nodes of 8), DP as the count leaves it, not --dp 16" in note and "with --dp" not in note
