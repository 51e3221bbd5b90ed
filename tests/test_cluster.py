"""Clusters (llmcalc/cluster.py, presets/clusters/*.yaml) and the reference node of each GPU preset:
every preset loads, and its figures are the arithmetic of its source, written out here."""

from __future__ import annotations

import json

import pytest

from llmcalc import presets
from llmcalc.cluster import Cluster, all_clusters, cluster_of, load_cluster
from llmcalc.gpuspec import DEFAULT_NETWORK_BANDWIDTH, DEFAULT_NODE_GPUS, GPUSpec
from llmcalc.presets import PresetError, load_gpu
from llmcalc.spec import SpecError

from .conftest import run

GBIT = 1e9 / 8  # B/s in one Gb/s: NICs are sold in bits per second

# cluster: (GPU preset, GPUs per node, B/s per GPU one direction between nodes, the source's arithmetic)
SOURCES = {
    "dgx-1": ("v100", 8, 4 * 100 * GBIT / 8),  # 4 x 100 Gb/s EDR for 8 GPUs
    "dgx-a100": ("a100-80gb", 8, 8 * 200 * GBIT / 8),  # 8 x 200 Gb/s HDR ConnectX-6
    "dgx-a100-40gb": ("a100-40gb", 8, 8 * 200 * GBIT / 8),
    "dgx-h100": ("h100-sxm", 8, 8 * 400 * GBIT / 8),  # 8 x 400 Gb/s NDR ConnectX-7
    "hgx-h800": ("h800", 8, 8 * 400 * GBIT / 8),  # DeepSeek: 8 x 400 Gb/s IB, "IB (50 GB/s)"
    "dgx-h200": ("h200", 8, 8 * 400 * GBIT / 8),
    "dgx-b200": ("b200", 8, 8 * 400 * GBIT / 8),
    "gb200-nvl72": ("gb200", 18 * 4, 4 * 400 * GBIT / 4),  # 18 trays x 4 GPUs; 4 x 400 Gb/s per tray
    "dgx-b300": ("b300", 8, 8 * 800 * GBIT / 8),  # 8 x 800 Gb/s ConnectX-8
    "gb300-nvl72": ("gb300", 18 * 4, 4 * 800 * GBIT / 4),  # 18 trays x 4 GPUs; 4 ConnectX-8 (800 Gb/s) per tray
    "mi300x-platform": ("mi300x", 8, 8 * 400 * GBIT / 8),
    "mi355x-platform": ("mi355x", 8, 8 * 400 * GBIT / 8),  # 8 x Pollara 400
    "frontier-node": ("mi250x", 4, 4 * 200 * GBIT / 4),  # 4 x 200 Gb/s Slingshot
    "hls-gaudi2": ("gaudi2", 8, 3 * 100 * GBIT),  # 3 scale-out 100 GbE ports per card
    "hls-gaudi3": ("gaudi3", 8, 3 * 200 * GBIT),  # 3 scale-out 200 GbE ports per card
    "aws-p4d": ("a100-40gb", 8, 400 * GBIT / 8),  # 400 Gbps EFA per instance
    "aws-p4de": ("a100-80gb", 8, 400 * GBIT / 8),
    "aws-p5": ("h100-sxm", 8, 3200 * GBIT / 8),  # 3200 Gbps EFA per instance
    "aws-p5e": ("h200", 8, 3200 * GBIT / 8),
    "azure-nd-a100-v4": ("a100-40gb", 8, 8 * 200 * GBIT / 8),
    "azure-nd-h100-v5": ("h100-sxm", 8, 8 * 400 * GBIT / 8),
    "azure-nd-mi300x-v5": ("mi300x", 8, 8 * 400 * GBIT / 8),
}

# GPU preset: (GPUs in its reference system's fast domain, B/s per GPU between domains)
GPU_NODES = {
    "v100": (8, 4 * 100 * GBIT / 8), "a100-40gb": (8, 200 * GBIT), "a100-80gb": (8, 200 * GBIT),
    "a800": (8, 200 * GBIT), "h100-sxm": (8, 400 * GBIT), "h800": (8, 400 * GBIT), "h200": (8, 400 * GBIT),
    "b200": (8, 400 * GBIT), "gb200": (72, 400 * GBIT), "b300": (8, 800 * GBIT), "gb300": (72, 800 * GBIT),
    "mi250x": (4, 200 * GBIT), "mi300x": (8, 400 * GBIT), "mi325x": (8, 400 * GBIT), "mi355x": (8, 400 * GBIT),
    "gaudi2": (8, 3 * 100 * GBIT), "gaudi3": (8, 3 * 200 * GBIT),
    "tpu-v5e": (256, 6.4e12 / 8 / 256),  # DCN 6.4 Tbps per 256-chip Pod
    "tpu-v5p": (6144, 50 * GBIT),  # largest single slice; DCN 50 Gbps per chip
    "tpu-v4": (4096, DEFAULT_NETWORK_BANDWIDTH), "tpu-v6e": (256, DEFAULT_NETWORK_BANDWIDTH),
}


def test_every_cluster_preset_loads_and_is_sourced():
    clusters = {c.name: c for c in all_clusters()}
    assert set(SOURCES) <= set(clusters), set(SOURCES) - set(clusters)
    for c in clusters.values():
        assert c.gpu == load_gpu(c.gpu.name), c.name
        assert "https://" in c.source, c.name
        assert c.nodes is None and c.gpus is None


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_cluster_figures_match_their_sources(name):
    gpu, per_node, network = SOURCES[name]
    c = load_cluster(name)
    assert (c.gpu.name, c.gpus_per_node) == (gpu, per_node)
    assert c.inter_bandwidth == pytest.approx(network)
    assert c.intra_bandwidth == c.gpu.interconnect_bandwidth  # intra_gb_s left out: the GPU's NVLink/xGMI


def test_named_examples_in_bytes():
    assert load_cluster("dgx-h100").inter_bandwidth == 50e9  # 8 x 400 Gb/s for 8 GPUs
    assert load_cluster("dgx-a100").inter_bandwidth == 25e9  # 8 x 200 Gb/s
    assert load_cluster("dgx-h100").intra_bandwidth == 450e9  # NVLink4: 900 GB/s both directions


@pytest.mark.parametrize("name", sorted(GPU_NODES))
def test_gpu_reference_nodes(name):
    gpus, network = GPU_NODES[name]
    g = load_gpu(name)
    assert (g.node_gpus, g.network_bandwidth) == (gpus, pytest.approx(network))


def test_gpu_without_a_reference_system_gets_the_documented_defaults():
    g = load_gpu("l40s")
    assert (g.node_gpus, g.network_bandwidth) == (DEFAULT_NODE_GPUS, DEFAULT_NETWORK_BANDWIDTH) == (8, 12.5e9)


def test_gpu_reference_node_fields_are_validated(tmp_path):
    base = "memory_gib: 80\nmemory_bandwidth_tb_s: 3\ntflops: {bf16: 900}\n"
    for line, word in (("node_gpus: 0", "node_gpus"), ("node_gpus: 8.5", "node_gpus"), ("node_gpus: true", "node_gpus"),
                       ("network_gb_s: -1", "network_gb_s"), ("network_gb_s: fast", "network_gb_s"),
                       ("network_gb_s: .nan", "network")):
        path = tmp_path / "g.yaml"
        path.write_text(base + line + "\n")
        with pytest.raises(PresetError, match=word) as exc:
            load_gpu(str(path))
        assert "g.yaml" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(SpecError, match="node_gpus"):
        GPUSpec("x", 1, 1.0, 0.0, {"bf16": 1.0}, node_gpus=0)


def test_count_syntax_counts_nodes_as_gpu_counts_gpus():
    c = load_cluster("4xdgx-h100")
    assert (c.nodes, c.gpus, c.gpus_per_node) == (4, 32, 8)
    assert load_cluster("2 \u00d7 GB200-NVL72").gpus == 144  # the x sign, spaces and case as --gpu takes them
    assert load_cluster("1xhgx-h100").name == "dgx-h100"  # an alias, counted
    assert load_cluster("dgx-h100").gpus is None
    with pytest.raises(PresetError, match="node count"):
        load_cluster("0xdgx-h100")


def test_unknown_cluster_suggests_the_nearest():
    with pytest.raises(PresetError, match=r"unknown cluster 'dgx-h1000'; did you mean dgx-h100"):
        load_cluster("dgx-h1000")
    with pytest.raises(PresetError, match="unknown cluster 'h100-sxm'"):  # a GPU is not a cluster: cluster_of
        load_cluster("8xh100-sxm")


def test_cluster_of_is_the_gpus_own_reference_node():
    c = cluster_of(load_gpu("h100"))
    assert (c.name, c.gpus_per_node, c.intra_bandwidth, c.inter_bandwidth, c.nodes) == ("h100-sxm", 8, 450e9, 50e9, None)
    assert cluster_of(load_gpu("gb200")).gpus_per_node == 72
    assert cluster_of(load_gpu("h100"), gpus_per_node=4).gpus_per_node == 4
    plain = cluster_of(load_gpu("l40s"))  # no reference system in the preset: the defaults
    assert (plain.gpus_per_node, plain.intra_bandwidth, plain.inter_bandwidth) == (8, 32e9, 12.5e9)
    with pytest.raises(SpecError, match="gpus_per_node"):
        cluster_of(load_gpu("h100"), gpus_per_node=0)


def test_cluster_is_validated():
    g = load_gpu("h100")
    with pytest.raises(SpecError, match="inter_bandwidth"):
        Cluster("c", g, 8, 1e9, -1.0)
    with pytest.raises(SpecError, match="nodes"):
        Cluster("c", g, 8, 1e9, 1e9, nodes=0)
    assert Cluster("c", g, 8, 1e9, 0.0, nodes=3).gpus == 24  # 0: nodes without a network


def _cluster_file(tmp_path, body: str):
    path = tmp_path / "mine.yaml"
    path.write_text(body)
    return str(path)


GOOD = "gpu: h100-sxm\ngpus_per_node: 8\nnetwork_gb_s: 25\n"


def test_user_cluster_files(tmp_path, monkeypatch):
    c = load_cluster(_cluster_file(tmp_path, GOOD + "intra_gb_s: 100\n"))
    assert (c.name, c.intra_bandwidth, c.inter_bandwidth) == ("mine", 100e9, 25e9)
    several = _cluster_file(tmp_path, "a:\n  " + GOOD.replace("\n", "\n  ").rstrip() + "\nb:\n  gpu: a100\n"
                            "  gpus_per_node: 4\n  network_gb_s: 12.5\n")
    assert load_cluster(several + ":b").gpus_per_node == 4
    monkeypatch.chdir(tmp_path)
    assert load_cluster("3xmine.yaml:a").gpus == 24  # counted as a name is (a file named by a path is not)


@pytest.mark.parametrize("body, message", [
    (GOOD + "netowrk: 1\n", "unknown field 'netowrk' in cluster 'mine'"),
    (GOOD.replace("network_gb_s: 25\n", ""), "cluster 'mine' is missing network_gb_s"),
    (GOOD.replace("8", "0"), "mine.gpus_per_node must be a positive whole number"),
    (GOOD.replace("8", "8.5"), "mine.gpus_per_node must be a positive whole number"),
    (GOOD.replace("25", "-1"), "mine.network_gb_s must be a number of GB/s >= 0"),
    (GOOD.replace("25", "fast"), "mine.network_gb_s must be a number"),
    (GOOD + "intra_gb_s: .inf\n", "intra_gb_s is inf"),
    (GOOD.replace("h100-sxm", "h1000"), "mine.gpu: unknown GPU 'h1000'; did you mean"),
    (GOOD + "aliases: dgx\n", "mine.aliases must be a list"),
])
def test_bad_cluster_fields_are_one_line_errors_naming_file_cluster_and_field(tmp_path, body, message):
    with pytest.raises(PresetError) as exc:
        load_cluster(_cluster_file(tmp_path, body))
    assert message in str(exc.value) and "mine.yaml" in str(exc.value) and "\n" not in str(exc.value)


def test_user_cluster_directory_shadows_and_lists(tmp_path, monkeypatch):
    clusters = tmp_path / "mine" / "clusters"
    clusters.mkdir(parents=True)
    (clusters / "x.yaml").write_text("dgx-h100:\n  gpu: h100\n  gpus_per_node: 8\n  network_gb_s: 25\n"
                                     "lab:\n  aliases: [our-lab]\n  gpu: l40s\n  gpus_per_node: 4\n  network_gb_s: 3.125\n")
    monkeypatch.setenv("LLMCALC_PRESETS", str(tmp_path / "mine"))
    presets.catalog.cache_clear()
    assert load_cluster("dgx-h100").inter_bandwidth == 25e9  # the user's, first in the search order
    assert load_cluster("our-lab").gpu.name == "l40s"
    listed = {c["name"]: c for c in json.loads(run("presets", "--json").stdout)["clusters"]}
    assert listed["lab"] == {"name": "lab", "gpu": "l40s", "gpus_per_node": 4, "intra": 32e9, "network": 3.125e9}


# -- through the CLI ------------------------------------------------------------------------------

def test_presets_list_shows_clusters_and_gpu_nodes():
    data = json.loads(run("presets", "--json").stdout)
    assert {"models", "gpus", "clusters"} == set(data)
    dgx = next(c for c in data["clusters"] if c["name"] == "dgx-h100")
    assert dgx == {"name": "dgx-h100", "gpu": "h100-sxm", "gpus_per_node": 8, "intra": 450e9, "network": 50e9}
    h100 = next(g for g in data["gpus"] if g["name"] == "h100-sxm")
    assert (h100["node_gpus"], h100["network"]) == (8, 50e9)
    for fmt in ("", "--csv", "--markdown"):
        result = run("presets", *([fmt] if fmt else []))
        assert result.exit_code == 0 and "gb200-nvl72" in result.stdout, fmt


@pytest.mark.parametrize("fmt", ["", "--json", "--csv", "--markdown"])
def test_presets_show_a_cluster_in_every_format(fmt):
    result = run("presets", "show", "4xdgx-h100", *([fmt] if fmt else []))
    assert result.exit_code == 0, result.output
    if fmt == "--json":
        data = json.loads(result.stdout)
        assert data["kind"] == "cluster" and data["name"] == "dgx-h100"
        assert {k: data["fields"][k] for k in ("gpu", "gpus_per_node", "intra_bandwidth", "inter_bandwidth", "nodes", "gpus")} \
            == {"gpu": "h100-sxm", "gpus_per_node": 8, "intra_bandwidth": 450e9, "inter_bandwidth": 50e9, "nodes": 4, "gpus": 32}
    elif fmt == "--csv":
        assert "cluster,inter_bandwidth,50000000000.0,byte/s" in result.stdout
    else:
        assert "cluster dgx-h100" in result.stdout and "50.0 GB/s" in result.stdout


def test_presets_show_prefers_the_cluster_name_to_a_gpu_alias():
    assert json.loads(run("presets", "show", "gb200-nvl72", "--json").stdout)["kind"] == "cluster"
    assert json.loads(run("presets", "show", "gb200", "--json").stdout)["kind"] == "GPU"
    shown = json.loads(run("presets", "show", "h100", "--json").stdout)
    assert (shown["kind"], shown["fields"]["node_gpus"], shown["fields"]["network_bandwidth"]) == ("GPU", 8, 50e9)


def test_presets_show_of_a_cluster_file_and_its_errors(tmp_path):
    good = _cluster_file(tmp_path, GOOD)
    assert json.loads(run("presets", "show", good, "--json").stdout)["kind"] == "cluster"
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("8", "0"))
    result = run("presets", "show", str(bad))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "bad.gpus_per_node must be a positive whole number" in result.stderr
    unknown = run("presets", "show", "dgx-h1000")
    assert unknown.exit_code == 2 and "did you mean dgx-h100" in unknown.stderr


def test_readme_gpu_and_cluster_examples_load(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = {kind: body for body, kind in re.findall(r"```yaml\n(my-(gpu|cluster):\n.*?)```", readme, re.S)}
    (tmp_path / "gpu.yaml").write_text(blocks["gpu"])
    (tmp_path / "cluster.yaml").write_text(blocks["cluster"])
    gpu = load_gpu(str(tmp_path / "gpu.yaml"))
    assert (gpu.node_gpus, gpu.network_bandwidth) == (8, 50e9)
    c = load_cluster(str(tmp_path / "cluster.yaml"))
    assert (c.name, c.gpu.name, c.inter_bandwidth, c.intra_bandwidth) == ("my-cluster", "h100-sxm", 25e9, 450e9)
