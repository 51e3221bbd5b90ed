"""`serve-plan`: the fewest GPUs (or dollars) meeting latency targets, through the real CLI."""

from __future__ import annotations

import json

import pytest

from .conftest import run

ISSUE = ("serve-plan", "--model", "llama-3.1-70b", "--gpu", "h100,a100-80gb", "--request-rate", "10", "--prompt", "2k",
         "--output", "256", "--ttft-target", "1s", "--tpot-target", "50ms")


def plan(*extra: str) -> dict:
    out = run(*ISSUE, *extra, "--json")
    assert out.exit_code in (0, 1), out.output
    return json.loads(out.stdout)


def test_the_issue_question_has_an_answer_with_its_reasons():
    """Llama-3.1-70B, 10 requests/s of 2k in / 256 out, TTFT <= 1 s, TPOT <= 50 ms, H100 or A100."""
    d = plan()
    layouts = d["summary"]["layouts"]
    assert layouts and all(x["meets"] and x["ttft"] <= 1.0 and x["tpot"] <= 0.05 for x in layouts)
    assert [x["gpus"] for x in layouts] == sorted(x["gpus"] for x in layouts)  # fewest GPUs first
    for x in layouts:  # the JSON contract (DESIGN.md)
        assert {"gpus", "tp", "pp", "replicas", "max_batch", "ttft", "tpot", "tokens_per_s", "meets"} <= set(x)
        assert x["gpus"] == x["tp"] * x["replicas"]
    # 70B in bf16 (141 GB) cannot sit on one 80 GB GPU: TP 1 is rejected for memory on both kinds
    why = {(r["gpu"], r["tp"]): r["why"] for r in d["summary"]["rejected"]}
    assert why[("h100-sxm", 1)].startswith("memory") and why[("a100-80gb", 1)].startswith("memory")
    assert any(f"rejected {gpu} TP 1: memory" in note for note in d["notes"] for gpu in ("h100-sxm",))


def test_one_fewer_replica_misses_the_targets():
    """The plan's replica count is the fewest: latency with one replica less (a larger share of the
    traffic) misses a target."""
    best = plan()["summary"]["layouts"][0]
    if best["replicas"] == 1:
        return
    share = 10 / (best["replicas"] - 1)
    out = run("latency", "--model", "llama-3.1-70b", "--gpu", best["gpu"], "--gpus", str(best["tp"]), "--prompt", "2k",
              "--output", "256", "--request-rate", str(share), "--json")
    s = json.loads(out.stdout)["summary"]
    assert s["ttft"] > 1.0 or s["tpot"] > 0.05


def test_prices_rank_by_dollars():
    d = plan("--gpu-price", "h100=4,a100-80gb=1")
    layouts = d["summary"]["layouts"]
    dollars = [x["usd_per_hour"] for x in layouts]
    assert dollars == sorted(dollars) and all(x["usd_per_mtok"] > 0 for x in layouts)
    assert layouts[0]["gpu"] == "a100-80gb"  # a quarter of the price beats fewer GPUs


def test_check_fails_when_nothing_meets_the_targets():
    out = run(*ISSUE[:-4], "--ttft-target", "10ms", "--check")
    assert out.exit_code == 1
    assert "no layout meets the targets" in out.stdout


def test_bad_traffic_is_one_line_exit_2():
    for args in (("--request-rate", "10", "--concurrency", "4"), ()):
        out = run("serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--ttft-target", "1s", *args)
        assert out.exit_code == 2 and out.stderr.count("\n") == 1, out.stderr
    out = run("serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--request-rate", "1")
    assert out.exit_code == 2 and "needs a target" in out.stderr
    out = run(*ISSUE, "--gpu-price", "h100=cheap")
    assert out.exit_code == 2 and "--gpu-price" in out.stderr


def test_the_table_lists_layouts_and_reasons():
    out = run(*ISSUE)
    assert out.exit_code == 0
    assert "layouts meeting the targets, cheapest first" in out.stdout
    assert "rejected a100-80gb TP 1: memory" in out.stdout


def test_the_plan_holds_up_in_a_longer_replay():
    """The cheapest layout, checked by `latency` on one replica's share of the traffic: not overloaded,
    within the targets."""
    best = plan()["summary"]["layouts"][0]
    out = run("latency", "--model", "llama-3.1-70b", "--gpu", best["gpu"], "--gpus", str(best["tp"]), "--prompt", "2k",
              "--output", "256", "--request-rate", str(10 / best["replicas"]), "--json")
    s = json.loads(out.stdout)["summary"]
    assert not s["overloaded"] and s["ttft"] <= 1.0 and s["tpot"] <= 0.05


def test_explain_writes_the_cheapest_layouts_formulas_under_the_listing():
    args = ("serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--request-rate", "5", "--ttft-target", "500ms")
    text = " ".join(run(*args, "--explain").stdout.split())
    assert "How each row is computed" in text and "gpus = 1 replicas x 1 TP = 1" in text
    assert "`gpus` = 1 replicas x 1 TP = 1" in run(*args, "--explain", "--markdown").stdout


def test_chart_says_a_listing_has_nothing_to_draw():
    import pytest

    from llmcalc.cli.common import UnusedOption

    with pytest.warns(UnusedOption, match="--chart has no effect with serve-plan"):
        out = run("serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--request-rate", "5", "--ttft-target",
                  "500ms", "--chart")
    assert out.exit_code == 0 and "layouts meeting the targets" in out.stdout


@pytest.mark.parametrize("price, why", [
    ("h100=2.5", "--gpu-price has no price for a100-80gb: give one price for each --gpu kind"),
    ("h100=2.5,a100-80gb=1.5,l40s=1", "--gpu-price prices l40s, which --gpu does not plan"),
    ("0", "give dollars per GPU-hour above 0"),
])
def test_prices_cover_the_gpus_planned(price, why):
    """A ranking by dollars needs every kind priced (a kind without one crashed the table), and a price for a kind not
    planned, or a free GPU, is a mistake worth a word."""
    out = run("serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100,a100-80gb", "--request-rate", "20",
              "--tpot-target", "30ms", "--gpu-price", price)
    assert out.exit_code == 2 and why in out.stderr and "Traceback" not in out.output, out.output


def test_a_counted_gpu_is_refused_where_the_plan_picks_the_count():
    out = run("serve-plan", "--model", "llama-3.1-8b", "--gpu", "2xh100", "--request-rate", "2", "--tpot-target", "100ms")
    assert out.exit_code == 2 and "serve-plan chooses the GPU count itself (--max-gpus bounds it)" in out.stderr


def test_no_layout_still_prints_the_title():
    out = run("serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--request-rate", "2", "--ttft-target", "1ms")
    assert out.stdout.startswith("Serving plan for llama-3.1-8b: no layout meets the targets\n")
