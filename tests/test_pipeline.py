"""The main command end to end on a reduced setting: trainer -> export -> hwsim -> reports."""
import json
import re

from pipeline.__main__ import main


def test_pipeline_reduced(tmp_path, capsys):
    code = main(["--runs", str(tmp_path), "--name", "small", "--epochs", "3", "--snn-epochs", "1",
                 "--timesteps-large", "32", "--samples", "60", "--sweep", "2,4,8", "--no-scratch", "--quiet"])
    assert code == 0
    run = tmp_path / "small"
    assert "summary: " + str(run / "report.md") in capsys.readouterr().out
    for stage in ("converted", "stdb"):
        assert (run / "export" / stage / "coregraph.npz").is_file()
        assert (run / "export" / stage / "model.onnx").is_file()
    results = json.loads((run / "hwsim" / "results.json").read_text())
    assert [n["label"] for n in results["networks"]] == ["converted", "stdb"]
    assert {p["timesteps"] for p in results["sweep"]} == {2, 4, 8}
    assert all(n["samples"] == 60 for n in results["networks"])
    report = (run / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert any(l.endswith("fig3_spikes_per_layer.png") for l in links)
    for link in links:
        assert (run / link).is_file(), link


def test_pipeline_residual(tmp_path, capsys):
    """The small residual net through the whole chain: its blocks are named in the report."""
    code = main(["--runs", str(tmp_path), "--name", "res", "--arch", "resnet_tiny", "--epochs", "3",
                 "--snn-epochs", "1", "--timesteps-large", "32", "--samples", "60", "--sweep", "4",
                 "--no-scratch", "--quiet"])
    assert code == 0
    run = tmp_path / "res"
    from export.graph import load_graph
    graph = load_graph(run / "export" / "stdb" / "coregraph.npz")
    assert [(sc.source, c.name) for c in graph.cores for sc in c.shortcuts] == [
        ("conv4", "block7_conv2"), ("block7_conv2", "block8_conv2")]
    results = json.loads((run / "hwsim" / "results.json").read_text())
    names = [l["name"] for l in results["networks"][1]["layers"]]
    assert "block7_conv2" in names and "block8_conv2" in names
    assert "| block8_conv2 |" in (run / "report.md").read_text()
