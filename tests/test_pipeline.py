"""The main command end to end on a reduced setting: trainer -> export -> hwsim -> reports."""
import json
import re

from pipeline.__main__ import build_parser, chain_config, main, methods_of
from records.timesteps import TimeSteps
from trainer.checkpoint import load_checkpoint
from trainer.layers import Conv, Linear
from trainer.train_state import weights_digest
from trainer.models import neuron_layers


def test_pipeline_reduced(tmp_path, capsys):
    """With its progress on (the output is not a terminal): lines, one per epoch, not a bar's redraws;
    on digits the low-latency recipe runs beside the paper's by default; with --distill each
    fine-tuning learns from its own ANN."""
    code = main(["--runs", str(tmp_path), "--name", "small", "--epochs", "3", "--snn-epochs", "1",
                 "--timesteps-large", "32", "--samples", "60", "--sweep", "2,4,8", "--no-scratch",
                 "--eval-samples", "40", "--large-eval-samples", "20", "--distill"])
    assert code == 0
    run = tmp_path / "small"
    converted = load_checkpoint(run / "converted.pt")
    assert converted.metrics["test_T4"]["samples"] == 40 and converted.metrics["test_T32"]["samples"] == 20
    stdb = load_checkpoint(run / "stdb.pt")
    assert stdb.metrics["test_T4"]["samples"] == 40 and stdb.train_state["config"]["val_samples"] == 40
    for stage, ann in (("stdb", "ann"), ("qcfs", "qcfs_ann")):
        config = load_checkpoint(run / f"{stage}.pt").train_state["config"]
        assert config["teacher"] == weights_digest(load_checkpoint(run / f"{ann}.pt")), stage
        assert config["distill"] == {"temperature": 4.0, "weight": 0.9}
    columns = (run / "metrics_stdb.csv").read_text().splitlines()[0].split(",")
    assert "grad_max_layers.0.weight" in columns          # each layer's largest gradient, before clipping
    out, err = capsys.readouterr()
    assert "summary: " + str(run / "report.md") in out
    assert "\r" not in out + err and len((out + err).splitlines()) < 120
    assert "ANN epoch 3/3: train " in out and "STDB epoch 1/1: train " in out and "SNN eval T=4: " in err
    for stage in ("converted", "stdb", "qcfs_converted", "qcfs"):
        assert (run / "export" / stage / "coregraph.npz").is_file()
        assert (run / "export" / stage / "model.onnx").is_file()
    results = json.loads((run / "hwsim" / "results.json").read_text())
    assert [n["label"] for n in results["networks"]] == ["converted", "stdb", "qcfs_converted", "qcfs"]
    qcfs = load_checkpoint(run / "qcfs_converted.pt")
    assert qcfs.snn.encoding == "integrate" and qcfs.snn.v_init == [0.5] * len(qcfs.snn.thresholds)
    assert "low latency (QCFS ANN + BN, conversion + STDB)" in (run / "report.md").read_text()
    assert {p["timesteps"] for p in results["sweep"]} == {2, 4, 8}
    assert all(n["samples"] == 60 for n in results["networks"])
    report = (run / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert any(l.endswith("fig3_spikes_per_layer.png") for l in links)
    for link in links:
        assert (run / link).is_file(), link


def test_pipeline_residual(tmp_path, capsys):
    """The small residual net through the whole chain under the calibrated recipe (CIFAR's
    default): its blocks' biases calibrated at T reach the cores, and its blocks are named
    in the report."""
    code = main(["--runs", str(tmp_path), "--name", "res", "--arch", "resnet_tiny", "--recipe", "calibrated",
                 "--epochs", "3", "--snn-epochs", "1", "--timesteps-large", "32", "--samples", "60", "--sweep", "4",
                 "--no-scratch", "--eval-samples", "40", "--quiet"])
    assert code == 0
    run = tmp_path / "res"
    from export.graph import load_graph
    converted = load_checkpoint(run / "converted.pt")
    assert len(converted.metrics["bias_calibration"]["mean_abs_shift"]) == len(neuron_layers(converted.arch))
    graph = load_graph(run / "export" / "stdb" / "coregraph.npz")
    assert [(sc.source, c.name) for c in graph.cores for sc in c.shortcuts] == [     # no dropout layers
        ("conv2", "block4_conv2"), ("block4_conv2", "block5_conv2")]
    blocks = [c for c in graph.cores if c.name.startswith("block")]
    assert len(blocks) == 4 and all(c.bias is not None and c.bias.any() for c in blocks)
    results = json.loads((run / "hwsim" / "results.json").read_text())
    names = [l["name"] for l in results["networks"][1]["layers"]]
    assert "block4_conv2" in names and "block5_conv2" in names
    assert "| block5_conv2 |" in (run / "report.md").read_text()


def test_pipeline_methods(tmp_path, capsys):
    """--methods: both baselines trained, exported with biases where batch norm was folded,
    simulated on the same inputs, and compared in the report."""
    code = main(["--runs", str(tmp_path), "--name", "m", "--epochs", "2", "--snn-epochs", "1", "--method-epochs", "1",
                 "--timesteps-large", "16", "--samples", "40", "--sweep", "4", "--no-scratch", "--quiet",
                 "--methods", "hybrid,spikebp,bncurrent"])
    assert code == 0
    run = tmp_path / "m"
    from export.graph import load_graph
    from trainer.checkpoint import load_checkpoint
    assert load_checkpoint(run / "spikebp.pt").snn.surrogate["kind"] == "spikebp"
    bn = load_checkpoint(run / "bncurrent.pt")
    assert all(l.bias for l in bn.arch.layers[:-1] if isinstance(l, (Conv, Linear)))
    graph = load_graph(run / "export" / "bncurrent" / "coregraph.npz")
    assert all(c.bias is not None for c in graph.spiking_cores) and graph.cores[-1].bias is None
    assert all(c.bias is None for c in load_graph(run / "export" / "spikebp" / "coregraph.npz").cores)
    results = json.loads((run / "hwsim" / "results.json").read_text())
    assert [n["label"] for n in results["networks"]] == ["converted", "stdb", "spikebp", "bncurrent"]
    report = (run / "report.md").read_text()
    assert "## Training methods compared" in report and "spike-based BP (Lee 2020)" in report
    assert (run / "report" / "methods.png").is_file()
    rows = (run / "report" / "methods.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["hybrid", "spikebp", "bncurrent"]


def test_the_recipes_regularisation_can_be_changed():
    """--conv-dropout, --fc-dropout, --label-smoothing and --cutout override the recipe's (the
    low-latency recipe's ANN has none of them)."""
    steps = TimeSteps(reduced=4, large=32)
    plain = chain_config(build_parser().parse_args(["--recipe", "low-latency"]), steps, "cpu", "low-latency")
    assert (plain.arch.conv_dropout, plain.arch.fc_dropout) == (0.0, 0.0)
    assert plain.ann_optim.cutout == 0 and (plain.arch.quant_levels, plain.arch.input_levels) == (4, 4)
    args = build_parser().parse_args(["--recipe", "low-latency", "--fc-dropout", "0.3", "--label-smoothing", "0.1",
                                      "--cutout", "16", "--budget-minutes", "60"])
    cfg = chain_config(args, steps, "cpu", "low-latency")
    assert (cfg.arch.conv_dropout, cfg.arch.fc_dropout, cfg.arch.norm) == (0.0, 0.3, True)
    assert cfg.ann_optim.label_smoothing == 0.1 and cfg.ann_optim.cutout == 16
    assert cfg.ann_optim.lr == 0.05      # the rest is the recipe's
    eight = chain_config(build_parser().parse_args(["--recipe", "low-latency", "--quant-levels", "4"]),
                         TimeSteps(reduced=8, large=32), "cpu", "low-latency")
    assert (eight.arch.quant_levels, eight.arch.input_levels) == (4, 8)      # the input as 8 steps deliver it
    paper = chain_config(build_parser().parse_args(["--conv-dropout", "0.1"]), steps, "cpu")
    assert (paper.arch.conv_dropout, paper.arch.fc_dropout) == (0.1, 0.5)


def test_the_conversion_settings_can_be_changed():
    """The paper's balancing by default; --statistic, --scaling-factor, --scaling and
    --calibrate-biases change it (the low-latency recipe calibrates on 256 images unless told)."""
    from trainer.chain import ConvertConfig
    from trainer.defaults import LOW_LATENCY_CALIBRATION

    steps = TimeSteps(reduced=4, large=32)
    assert chain_config(build_parser().parse_args([]), steps, "cpu").convert == ConvertConfig()
    args = build_parser().parse_args(["--statistic", "percentile", "--scaling-factor", "1", "--scaling", "uniform",
                                      "--calibrate-biases", "64"])
    cfg = chain_config(args, steps, "cpu").convert
    assert (cfg.statistic, cfg.scaling_factor, cfg.scaling, cfg.bias_calibration) == ("percentile", 1.0, "uniform", 64)
    low = chain_config(build_parser().parse_args(["--recipe", "low-latency"]), steps, "cpu", "low-latency")
    assert low.convert.bias_calibration == LOW_LATENCY_CALIBRATION
    off = build_parser().parse_args(["--recipe", "low-latency", "--calibrate-biases", "0"])
    assert chain_config(off, steps, "cpu", "low-latency").convert.bias_calibration == 0


def test_the_low_latency_chain_is_not_run_twice():
    """On digits the qcfs method (the low-latency recipe) runs beside the paper's chain by
    default; under --recipe low-latency it is the chain itself."""
    assert methods_of(build_parser().parse_args([])) == ("hybrid", "qcfs")
    assert methods_of(build_parser().parse_args(["--recipe", "low-latency"])) == ("hybrid",)


def test_the_calibrated_recipe_is_the_t100_runs():
    """--recipe calibrated: the paper's T, a batch-norm ReLU ANN with Cutout (on CIFAR) and label
    smoothing, percentile thresholds unscaled, biases calibrated on 256 images, distilled STDB
    by Adam at 1e-4 on the 8-bit grid with the linear surrogate; the command line still
    changes each of them."""
    from trainer.defaults import default_timesteps

    steps = default_timesteps("cifar10", arch="vgg9", recipe="calibrated")
    assert (steps.reduced, steps.large) == (100, 2500)
    cfg = chain_config(build_parser().parse_args(["--dataset", "cifar10", "--arch", "vgg9", "--recipe", "calibrated"]),
                       steps, "cpu", "calibrated")
    assert (cfg.arch.norm, cfg.arch.quant_levels, cfg.arch.conv_dropout, cfg.arch.fc_dropout) == (True, None, 0, 0)
    assert (cfg.ann_optim.cutout, cfg.ann_optim.label_smoothing, cfg.ann_optim.lr) == (16, 0.1, 0.05)
    conv = cfg.convert
    assert (conv.statistic, conv.percentile, conv.scaling_factor, conv.bias_calibration) == ("percentile", 99.9, 1.0,
                                                                                             256)
    snn = cfg.snn
    assert (snn.optim.optimizer, snn.optim.lr, snn.weight_bits, cfg.surrogate.kind) == ("adam", 1e-4, 8, "linear")
    assert snn.distill is not None
    digits = chain_config(build_parser().parse_args(["--recipe", "calibrated"]), TimeSteps(4, 32), "cpu", "calibrated")
    assert digits.ann_optim.cutout == 0          # 16 pixels would blank a quarter of an 8 x 8 digit
    changed = chain_config(build_parser().parse_args(
        ["--dataset", "cifar10", "--recipe", "calibrated", "--cutout", "8", "--calibrate-biases", "0",
         "--statistic", "max", "--budget-minutes", "60"]), steps, "cpu", "calibrated")
    assert (changed.ann_optim.cutout, changed.convert.bias_calibration, changed.convert.statistic) == (8, 0, "max")
    assert changed.ann_optim.epochs == 200 and changed.snn.optim.lr == 1e-4     # the budget's epochs, the recipe's rate


def test_pipeline_calibrated_recipe(tmp_path):
    """The calibrated recipe through the whole chain on digits: the conversion balanced at the
    percentile, unscaled, its biases calibrated at T; STDB distilled on the 8-bit grid."""
    code = main(["--runs", str(tmp_path), "--name", "cal", "--recipe", "calibrated", "--methods", "hybrid",
                 "--epochs", "3", "--snn-epochs", "1", "--timesteps-large", "32", "--samples", "40", "--sweep", "4",
                 "--no-scratch", "--eval-samples", "40", "--quiet"])
    assert code == 0
    run = tmp_path / "cal"
    ann = load_checkpoint(run / "ann.pt")
    assert all(l.norm for l in ann.arch.layers if isinstance(l, Conv))
    converted = load_checkpoint(run / "converted.pt")
    balance = converted.metrics["balance"]
    assert balance["statistic"] == "percentile" and balance["scaling_factor"] == 1.0
    assert converted.metrics["bias_calibration"]["samples"] == 256
    assert converted.metrics["bias_calibration"]["timesteps"] == 4
    config = load_checkpoint(run / "stdb.pt").train_state["config"]
    assert (config["weight_bits"], config["surrogate"]["kind"], config["lr"]) == (8, "linear", 1e-4)
    assert config["teacher"] == weights_digest(ann)
    assert json.loads((run / "hwsim" / "results.json").read_text())["networks"][1]["label"] == "stdb"
