"""The converted SNN against its ANN layer by layer (trainer.diagnose, ``python -m trainer diagnose``),
and the unscaled thresholds the conversion records for the large T."""
import pandas as pd
import pytest
import torch

from trainer.__main__ import main
from trainer.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from trainer.diagnose import layer_agreement
from trainer.layers import Flatten, Linear
from trainer.models import ANN, ArchConfig, neuron_layers
from trainer.chain import ConvertConfig, convert
from trainer.recipe import Runtime


def one_layer_net() -> ANN:
    """Four inputs straight through to four neurons (identity weights), then a classifier."""
    ann = ANN(ArchConfig("identity", (1, 1, 4), 2, [Flatten(), Linear(4), Linear(2)]))
    with torch.no_grad():
        ann.layers[1].weight.copy_(torch.eye(4))
    return ann


def test_rate_times_threshold_meets_the_activation_and_clipping_shows():
    ann = one_layer_net()
    x = torch.tensor([[[[0.1, 0.4, 0.8, -0.5]]]])                 # activations 0.1, 0.4, 0.8, 0
    rows = layer_agreement(ann, [1.0], x, 2000)
    good, output = rows
    assert output["layer"] == "output" and output["ann_agreement"] == 1.0 and output["relative_error"] < 0.05
    assert good["clipped"] == 0 and good["saturated"] == 0 and good["relative_error"] < 0.05
    assert good["mean_rate"] == pytest.approx((0.1 + 0.4 + 0.8) / 4, abs=0.02)
    low = layer_agreement(ann, [0.5], x, 2000)[0]                  # 0.8 / 0.5 > 1: one neuron clipped
    assert low["clipped"] == 0.25 and low["saturated"] == 0.25 and low["relative_error"] > 0.1


def ann_checkpoint(digits, folder):
    from trainer.models import build_config
    torch.manual_seed(0)
    arch = build_config("vgg_tiny", digits.input_shape, digits.num_classes)
    data = {"dataset": "digits", "data_root": None, "normalisation": digits.normalisation.to_dict(),
            "class_names": digits.class_names, "input_shape": list(digits.input_shape)}
    return save_checkpoint(Checkpoint("ann", arch, ANN(arch).state_dict(), data), folder / "ann.pt")


def test_conversion_records_the_unscaled_thresholds_and_diagnose_reads_them(digits, tmp_path, capsys):
    ann = load_checkpoint(ann_checkpoint(digits, tmp_path))
    conv = convert(ann, digits, ConvertConfig(balance_batches=1, scaling_factor=0.7), 6, tmp_path / "converted.pt",
                   Runtime(progress=False))
    unscaled = conv.metrics["balance"]["unscaled"]
    assert conv.snn.thresholds == pytest.approx([0.7 * v for v in unscaled])
    out = tmp_path / "layers.csv"
    assert main(["diagnose", str(tmp_path / "converted.pt"), "--timesteps", "4", "16", "--samples", "16",
                 "--unscaled", "--out", str(out), "--quiet"]) == 0
    rows = pd.read_csv(out)
    n = len(neuron_layers(conv.arch)) + 1                         # and the output
    assert list(rows["timesteps"]) == [4] * n + [16] * n and rows["layer"].iloc[-1] == "output"
    assert rows["threshold"].tolist()[:n - 1] == pytest.approx(unscaled)
    assert rows["relative_error"].notna().all()


def test_unscaled_needs_a_record_and_an_ann_is_refused(converted, digits, tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert main(["diagnose", str(converted), "--timesteps", "4", "--unscaled", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records no unscaled thresholds" in err[0] and not out.exists()
    ann = ann_checkpoint(digits, tmp_path)
    assert main(["diagnose", str(ann), "--timesteps", "4", "--out", str(out)]) == 2
    assert "an ANN checkpoint" in capsys.readouterr().err and not out.exists()


def test_a_calibrated_conversion_is_refused(digits, tmp_path, capsys):
    """Its biases hold the calibration's corrections, so the ANN diagnose compares with would
    not be the one it was converted from: one line, exit 2, no file."""
    ann = load_checkpoint(ann_checkpoint(digits, tmp_path))
    convert(ann, digits, ConvertConfig(balance_batches=1, bias_calibration=16), 4, tmp_path / "calibrated.pt",
            Runtime(progress=False))
    out = tmp_path / "x.csv"
    assert main(["diagnose", str(tmp_path / "calibrated.pt"), "--timesteps", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "biases are calibrated" in err[0] and not out.exists()


def test_eval_scores_an_ann_on_the_images_an_snn_evaluation_takes(digits, tmp_path, capsys):
    """``trainer eval ANN.pt --eval-samples N``: the ANN on the test split's first N images (the
    large-T column's comparison), where it used to score the whole split whatever N said."""
    import json

    from trainer.data import batches, load_dataset
    from trainer.evaluate import evaluate_ann
    path = ann_checkpoint(digits, tmp_path)
    ann = load_checkpoint(path).model().eval()
    data = load_dataset("digits")                                 # as the command loads the checkpoint's data
    x, y = next(batches(data, "test", 7, shuffle=False))
    with torch.no_grad():
        first7 = 100.0 * float((ann(x).argmax(1) == y).float().mean())
    assert evaluate_ann(ann, data, batch_size=4, samples=7) == pytest.approx(first7)
    assert evaluate_ann(ann, digits, samples=10 ** 6) == pytest.approx(evaluate_ann(ann, digits))
    assert main(["eval", str(path), "--eval-samples", "7", "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["stage"] == "ann" and line["samples"] == 7 and line["accuracy"] == pytest.approx(first7)
