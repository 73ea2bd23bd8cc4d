"""A corpus of bad inputs to every program of the chain, by class of failure.

Each ``Case`` names the program, its arguments (``{t}`` is the folder of good files
that ``tests/test_bad_inputs.py`` builds: ``ann.pt``, ``run/{converted,stdb}.pt``,
``run/export/<stage>/coregraph.npz``, ``run/hwsim/{results.json,inputs.npz}``,
``run/trainer_summary.json``, ``energy.json``), an optional ``setup`` that makes the bad
file inside that folder, an optional ``fault`` injected into every write (a full disk,
a folder that refuses writes), and a fragment the one-line message must contain.
The runner demands exit code 2, exactly one line ``<program>: ...`` on stderr holding
the fragment, no traceback, and that no file under the folder changed or appeared.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from records.inputs import InputSet, save_inputs

CLASSES = {
    "non-finite": "NaN or infinity in a checkpoint, graph, result, energy model or option",
    "resume": "an output holding a run of another configuration",
    "degenerate-data": "data sets a classifier cannot learn from or that do not fit the model",
    "foreign-code": "files crafted to run code when read",
    "inconsistent-results": "result files whose numbers contradict each other",
    "arguments": "out-of-range options, unwritable or full output folders",
    "unclear-before": "inputs that used to get a misleading or unhelpful message",
    "outside-folder": "files a run folder's contents would make a command touch outside it",
    "sized-before": "work too large to finish, refused before it starts",
    "malformed-values": "a value of the wrong type in a file (a fraction where an integer belongs, a number as a "
                        "string): refused, never converted",
}


@dataclass(frozen=True)
class Case:
    klass: str
    name: str
    program: str                        # trainer | export.to_lava | hwsim.run | reports | pipeline
    args: str                           # split on spaces after {t} is filled in
    expect: str                         # fragment of the message
    setup: Callable[[Path], None] | None = None
    fault: str | None = None            # "no-space" | "torch-full" | "no-permission"


# ---- makers of bad files (each writes one new file inside the folder t)
def edit_checkpoint(src: str, dst: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        raw = torch.load(t / src, weights_only=True)
        change(raw)
        torch.save(raw, t / dst)
    return make


def edit_json(src: str, dst: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        doc = json.loads((t / src).read_text())
        change(doc)
        (t / dst).parent.mkdir(parents=True, exist_ok=True)
        (t / dst).write_text(json.dumps(doc))       # allows NaN and Infinity, as a careless writer would
    return make


def edit_graph(src: str, dst: str, change: Callable[[dict, dict], None]) -> Callable[[Path], None]:
    """change(header, arrays) on a copy of a core graph's .npz."""
    def make(t: Path) -> None:
        with np.load(t / src) as data:
            arrays = {k: data[k] for k in data.files}
        head = json.loads(bytes(arrays["__graph__"]).decode())
        change(head, arrays)
        arrays["__graph__"] = np.frombuffer(json.dumps(head).encode(), dtype=np.uint8)
        np.savez(t / dst, **arrays)
    return make


def edit_inputs(dst: str, change: Callable[[dict, dict], None]) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        with np.load(t / "run/hwsim/inputs.npz") as data:
            arrays = {k: data[k] for k in data.files}
        head = json.loads(bytes(arrays["__inputs__"]).decode())
        change(head, arrays)
        arrays["__inputs__"] = np.frombuffer(json.dumps(head).encode(), dtype=np.uint8)
        np.savez(t / dst, **arrays)
    return make


def write_bytes(dst: str, content: bytes) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        (t / dst).parent.mkdir(parents=True, exist_ok=True)
        (t / dst).write_bytes(content)
    return make


def chain(*makers) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        for m in makers:
            m(t)
    return make


class Payload:
    """Unpickling this runs ``os.system``: the marker file it would create proves it ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def pickle_payload(dst: str) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        (t / dst).parent.mkdir(parents=True, exist_ok=True)
        with open(t / dst, "wb") as f:
            pickle.dump({b"data": Payload(t / "PWNED"), b"labels": [0]}, f)
    return make


def torch_payload(dst: str) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        torch.save({"format": "hybrid-snn-checkpoint", "payload": Payload(t / "PWNED")}, t / dst)
    return make


def npz_object_array(dst: str, key: str) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        np.savez(t / dst, **{key: np.array([Payload(t / "PWNED")], dtype=object)})
    return make


def image_folder(dst: str, classes: dict[str, int], val: dict[str, int] | None = None,
                 corrupt: str | None = None) -> Callable[[Path], None]:
    """An ImageFolder tree with that many 8x8 PNGs per class (``corrupt``: one file of random bytes)."""
    from PIL import Image

    def make(t: Path) -> None:
        rng = np.random.default_rng(0)
        for split, counts in (("train", classes), ("val", classes if val is None else val)):
            for cls, n in counts.items():
                folder = t / dst / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        if corrupt:
            (t / dst / corrupt).write_bytes(os.urandom(300))
    return make


def cifar_pickles(dst: str, bad: str, content: Callable[[Path], None]) -> Callable[[Path], None]:
    """A cifar-10-batches-py folder of tiny valid batches where ``bad`` is replaced by ``content``."""
    def make(t: Path) -> None:
        folder = t / dst / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 0, 1]}
            (folder / name).write_bytes(pickle.dumps(batch))
        (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}))
        content(t)
    return make


def truncated(src: str, dst: str, keep: float = 0.5) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        data = (t / src).read_bytes()
        (t / dst).write_bytes(data[:int(len(data) * keep)])
    return make


def strip_config(src: str, dst: str) -> Callable[[Path], None]:
    return edit_checkpoint(src, dst, lambda r: r["train_state"].pop("config"))


def copy(src: str, dst: str) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        shutil.copy(t / src, t / dst)
    return make


def zip_of(dst: str, members: dict[str, bytes]) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        with zipfile.ZipFile(t / dst, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
    return make


def _set(path: list, value):
    """A change that sets doc[path...] = value."""
    def change(doc):
        for k in path[:-1]:
            doc = doc[k]
        doc[path[-1]] = value
    return change


def _results(dst: str, *path_value) -> Callable[[Path], None]:
    changes = [_set(list(path_value[i]), path_value[i + 1]) for i in range(0, len(path_value), 2)]
    return edit_json("run/hwsim/results.json", dst, lambda d: [c(d) for c in changes])


def _nan_weight(r):
    r["state_dict"]["layers.0.weight"][0, 0, 0, 0] = float("nan")


def _inf_weights(r):
    r["state_dict"]["layers.0.weight"][:3] = float("inf")


def _graph_core(i: int, key: str, value):
    def change(head, arrays):
        head["cores"][i][key] = value
    return change


def planted_journal(folder: str, final: str) -> Callable[[Path], None]:
    """A set-write journal planted in ``folder`` (a shared or downloaded run) whose rename would
    replace ``final`` (relative to the folder, or absolute: ``{t}`` is filled in), with a victim
    file outside the run to replace."""
    def make(t: Path) -> None:
        (t / "victim.txt").write_text("keep me")
        (t / folder / ".x.999999.a.tmp").write_text("attacker's content")
        pairs = [[".x.999999.a.tmp", final.format(t=t)]]
        (t / folder / ".results.json.journal.999999.b.commit").write_text(json.dumps(pairs))
    return make


# Shorthands for arguments.
Q = "--quiet"
EXP = "--eval-samples 4 --calibration-samples 4"
HW = "--no-progress --device cpu"
G2 = "--graph converted={t}/run/export/converted/coregraph.npz --graph stdb={t}/run/export/stdb/coregraph.npz"
IN = "--inputs {t}/run/hwsim/inputs.npz"
OUT_EXP = "--out {t}/run/export/converted"            # the existing good export: must stay as it is
OUT_HW = "--out {t}/run/hwsim"


CASES = [
    # 1. non-finite numbers --------------------------------------------------------------
    Case("non-finite", "eval: one NaN weight", "trainer", f"eval {{t}}/nan.pt {Q}", "non-finite",
         edit_checkpoint("run/converted.pt", "nan.pt", _nan_weight)),
    Case("non-finite", "export: inf weights over a good graph", "export.to_lava",
         f"{{t}}/inf.pt {OUT_EXP} {EXP}", "non-finite", edit_checkpoint("run/converted.pt", "inf.pt", _inf_weights)),
    Case("non-finite", "stdb: NaN weight in the initial checkpoint", "trainer",
         f"stdb {{t}}/nan.pt --timesteps 4 --epochs 1 {Q}", "non-finite",
         edit_checkpoint("run/converted.pt", "nan.pt", _nan_weight)),
    Case("non-finite", "convert: NaN weight in the ANN", "trainer", f"convert {{t}}/nan.pt --timesteps 4 {Q}",
         "non-finite", edit_checkpoint("ann.pt", "nan.pt", _nan_weight)),
    Case("non-finite", "eval: infinite threshold", "trainer", f"eval {{t}}/thr.pt {Q}", "thresholds",
         edit_checkpoint("run/converted.pt", "thr.pt", lambda r: r["snn"]["thresholds"].__setitem__(0, float("inf")))),
    Case("non-finite", "eval: NaN normalisation mean", "trainer", f"eval {{t}}/norm.pt {Q}", "normalisation",
         edit_checkpoint("run/converted.pt", "norm.pt",
                         lambda r: r["data"]["normalisation"].update(mean=[float("nan")]))),
    Case("non-finite", "eval: NaN surrogate alpha", "trainer", f"eval {{t}}/sg.pt {Q}", "surrogate",
         edit_checkpoint("run/stdb.pt", "sg.pt", lambda r: r["snn"]["surrogate"].update(alpha=float("nan")))),
    Case("non-finite", "ann --lr nan", "trainer", f"ann --out {{t}}/x.pt --lr nan {Q}", "--lr"),
    Case("non-finite", "ann --weight-decay inf", "trainer", f"ann --out {{t}}/x.pt --weight-decay inf {Q}",
         "--weight-decay"),
    Case("non-finite", "chain --percentile nan", "trainer", f"chain --runs {{t}}/runs --percentile nan {Q}",
         "--percentile"),
    Case("non-finite", "stdb --alpha inf", "trainer", f"stdb {{t}}/run/converted.pt --timesteps 4 --alpha inf {Q}",
         "--alpha"),
    Case("non-finite", "ann diverges (--lr 1e30)", "trainer",
         f"ann --out {{t}}/div.pt --lr 1e30 --epochs 2 --train-subset 200 {Q}", "diverged"),
    Case("non-finite", "graph core with NaN float threshold", "hwsim.run",
         f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}", "finite",
         edit_graph("run/export/converted/coregraph.npz", "g.npz", _graph_core(0, "float_threshold", float("nan")))),
    Case("non-finite", "graph input normalisation std inf", "hwsim.run", f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}",
         "std", edit_graph("run/export/converted/coregraph.npz", "g.npz",
                           lambda h, a: h["input"].update(std=[float("inf")]))),
    Case("non-finite", "energy model with NaN", "hwsim.run", f"{G2} {IN} {OUT_HW} {HW} --energy-model {{t}}/e.json",
         "e_spike", edit_json("energy.json", "e.json", _set(["e_spike"], float("nan")))),
    Case("non-finite", "energy model that overflows (1e308)", "hwsim.run",
         f"{G2} {IN} {OUT_HW} {HW} --energy-model {{t}}/e.json", "e.json",
         edit_json("energy.json", "e.json", _set(["e_spike"], 1e308))),
    Case("non-finite", "results with NaN energy", "reports", "{t}/run --results {t}/r.json", "energy",
         _results("r.json", ("networks", 0, "totals", "energy"), float("nan"))),
    Case("non-finite", "trainer summary with NaN accuracy", "reports",
         "{t}/run --trainer-summary {t}/s.json", "accuracy",
         edit_json("run/trainer_summary.json", "s.json", _set(["accuracy", 0, "accuracy"], float("nan")))),
    Case("non-finite", "results with infinite delay", "reports", "{t}/run --results {t}/r.json", "delay",
         _results("r.json", ("networks", 1, "totals", "delay"), float("inf"))),

    # 2. resume under another configuration ----------------------------------------------
    Case("resume", "ann with another --lr", "trainer", f"ann --out {{t}}/ann.pt --lr 0.02 --epochs 1 "
         f"--train-subset 200 {Q}", "lr: 0.05 there, 0.02 now"),
    Case("resume", "ann with another --seed", "trainer", f"ann --out {{t}}/ann.pt --lr 0.05 --epochs 1 "
         f"--train-subset 200 --seed 3 {Q}", "seed: 0 there, 3 now"),
    Case("resume", "ann with another --epochs", "trainer", f"ann --out {{t}}/ann.pt --lr 0.05 --epochs 4 "
         f"--train-subset 200 {Q}", "epochs: 1 there, 4 now"),
    Case("resume", "ann with another --train-subset", "trainer", f"ann --out {{t}}/ann.pt --lr 0.05 --epochs 1 "
         f"--train-subset 300 {Q}", "train_images"),
    Case("resume", "ann over a converted checkpoint", "trainer", f"ann --out {{t}}/run/converted.pt --epochs 1 {Q}",
         "not a resumable run"),
    Case("resume", "stdb with another --timesteps", "trainer",
         f"stdb {{t}}/run/converted.pt --out {{t}}/run/stdb.pt --timesteps 5 --epochs 1 --lr 0.001 "
         f"--optimizer adam --train-subset 300 --test-subset 60 {Q}", "timesteps: 6 there, 5 now"),
    Case("resume", "stdb from another initial checkpoint", "trainer",
         f"stdb {{t}}/other.pt --out {{t}}/run/stdb.pt --timesteps 6 --epochs 1 --lr 0.001 --optimizer adam "
         f"--weight-decay 0.0005 --train-subset 300 --test-subset 60 {Q}", "init:",
         edit_checkpoint("run/converted.pt", "other.pt", lambda r: r["snn"]["thresholds"].__setitem__(0, 2.5))),
    Case("resume", "stdb over a checkpoint of an older version (no recorded configuration)", "trainer",
         f"stdb {{t}}/run/converted.pt --out {{t}}/old.pt --timesteps 6 --epochs 1 {Q}", "--restart",
         strip_config("run/stdb.pt", "old.pt")),

    # 3. degenerate data -----------------------------------------------------------------
    Case("degenerate-data", "image folder with one class", "trainer",
         f"ann --dataset folder --data-root {{t}}/one --out {{t}}/x.pt --epochs 1 {Q}", "at least 2",
         image_folder("one", {"cat": 3})),
    Case("degenerate-data", "image folder with an empty class folder", "trainer",
         f"ann --dataset folder --data-root {{t}}/empty --out {{t}}/x.pt --epochs 1 {Q}", "no images",
         chain(image_folder("empty", {"cat": 2, "dog": 2}), lambda t: (t / "empty/train/emu").mkdir())),
    Case("degenerate-data", "val classes differ from train classes", "trainer",
         f"ann --dataset folder --data-root {{t}}/mis --out {{t}}/x.pt --epochs 1 {Q}", "differ",
         image_folder("mis", {"cat": 2, "dog": 2}, val={"cat": 2, "emu": 2})),
    Case("degenerate-data", "a corrupt image", "trainer",
         f"ann --dataset folder --data-root {{t}}/bad --out {{t}}/x.pt --epochs 1 {Q}", "cannot decode",
         image_folder("bad", {"cat": 2, "dog": 2}, corrupt="train/dog/9.png")),
    Case("degenerate-data", "--train-subset 1 leaves one class", "trainer",
         f"ann --out {{t}}/x.pt --train-subset 1 --epochs 1 {Q}", "one class"),
    Case("degenerate-data", "CIFAR batches of the wrong width", "trainer",
         f"ann --dataset cifar10 --data-root {{t}}/c10 --out {{t}}/x.pt --epochs 1 {Q}", "3072",
         cifar_pickles("c10", "data_batch_2", write_bytes(
             "c10/cifar-10-batches-py/data_batch_2",
             pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})))),
    Case("degenerate-data", "CIFAR batch with labels outside the classes", "trainer",
         f"ann --dataset cifar10 --data-root {{t}}/c10 --out {{t}}/x.pt --epochs 1 {Q}", "labels outside",
         cifar_pickles("c10", "test_batch", write_bytes(
             "c10/cifar-10-batches-py/test_batch",
             pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 7]})))),
    Case("degenerate-data", "truncated MNIST file", "trainer",
         f"ann --dataset mnist --data-root {{t}}/mn --out {{t}}/x.pt --epochs 1 {Q}", "mn",
         chain(*[write_bytes(f"mn/{n}", b"\x00\x00\x08\x03\x00\x00") for n in
                 ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")])),
    Case("degenerate-data", "export with a --data-root of another data set", "export.to_lava",
         "{t}/f.pt --data-root {t}/three --out {t}/e " + EXP, "trained on",
         chain(image_folder("three", {"a": 2, "b": 2, "c": 2}),
               edit_checkpoint("run/converted.pt", "f.pt", lambda r: r["data"].update(
                   dataset="folder", data_root=None, image_size=8)))),
    Case("degenerate-data", "hwsim with a --data-root of other classes", "hwsim.run",
         "--graph a={t}/g.npz --data-root {t}/three --samples 2 " + f"{OUT_HW} {HW}", "another data set",
         chain(image_folder("three", {"a": 2, "b": 2, "c": 2}),
               edit_graph("run/export/converted/coregraph.npz", "g.npz", lambda h, a: h["data"].update(
                   dataset="folder", root=None, image_size=8)))),
    Case("degenerate-data", "inputs file with a label outside the classes", "hwsim.run",
         f"{G2} --inputs {{t}}/in.npz {OUT_HW} {HW}", "label",
         edit_inputs("in.npz", lambda h, a: a["labels"].__setitem__(0, 12))),
    Case("degenerate-data", "inputs file without images", "hwsim.run", f"{G2} --inputs {{t}}/in.npz {OUT_HW} {HW}",
         "no images", lambda t: save_inputs(t / "in.npz", InputSet(np.zeros((0, 1, 8, 8), np.uint8),
                                                                  np.zeros(0, np.int64), 0, 6))),
    Case("degenerate-data", "inputs file with float images", "hwsim.run", f"{G2} --inputs {{t}}/in.npz {OUT_HW} {HW}",
         "uint8", edit_inputs("in.npz", lambda h, a: a.update(images=a["images"].astype(np.float32)))),

    # 4. foreign code ---------------------------------------------------------------------
    Case("foreign-code", "CIFAR-10 batch that runs a command", "trainer",
         f"ann --dataset cifar10 --data-root {{t}}/c10 --out {{t}}/x.pt --epochs 1 {Q}", "refused",
         cifar_pickles("c10", "data_batch_1", pickle_payload("c10/cifar-10-batches-py/data_batch_1"))),
    Case("foreign-code", "CIFAR-100 train file that runs a command", "trainer",
         f"ann --dataset cifar100 --data-root {{t}}/c100 --out {{t}}/x.pt --epochs 1 {Q}", "refused",
         chain(pickle_payload("c100/cifar-100-python/train"), pickle_payload("c100/cifar-100-python/test"))),
    Case("foreign-code", "checkpoint that runs a command", "trainer", f"eval {{t}}/evil.pt {Q}", "refused",
         torch_payload("evil.pt")),
    Case("foreign-code", "checkpoint that runs a command, to export", "export.to_lava", "{t}/evil.pt --out {t}/e",
         "refused", torch_payload("evil.pt")),
    Case("foreign-code", "core graph with a pickled object", "hwsim.run", f"--graph a={{t}}/evil.npz {IN} {HW}",
         "evil.npz", npz_object_array("evil.npz", "__graph__")),
    Case("foreign-code", "inputs file with a pickled object", "hwsim.run", f"{G2} --inputs {{t}}/evil.npz {HW}",
         "evil.npz", npz_object_array("evil.npz", "__inputs__")),

    # 5. inconsistent results -------------------------------------------------------------
    Case("inconsistent-results", "negative spike count", "reports", "{t}/run --results {t}/r.json", "negative",
         _results("r.json", ("networks", 0, "layers", 0, "spikes"), -5)),
    Case("inconsistent-results", "empty layer list", "reports", "{t}/run --results {t}/r.json", "no layers",
         _results("r.json", ("networks", 0, "layers"), [])),
    Case("inconsistent-results", "total spikes disagree with the layers", "reports", "{t}/run --results {t}/r.json",
         "spikes", _results("r.json", ("networks", 0, "totals", "spikes"), 12345)),
    Case("inconsistent-results", "EDP is not energy x delay", "reports", "{t}/run --results {t}/r.json", "edp",
         _results("r.json", ("networks", 1, "totals", "edp"), 1.0)),
    Case("inconsistent-results", "spikes per image disagree with spikes / samples", "reports",
         "{t}/run --results {t}/r.json", "spikes_per_image",
         _results("r.json", ("networks", 0, "totals", "spikes_per_image"), 1.0)),
    Case("inconsistent-results", "a network's samples differ from the header's", "reports",
         "{t}/run --results {t}/r.json", "samples", _results("r.json", ("networks", 1, "samples"), 7)),
    Case("inconsistent-results", "ratio disagrees with the totals", "reports", "{t}/run --results {t}/r.json",
         "ratio", _results("r.json", ("ratios", 0, "energy"), 9.0)),
    Case("inconsistent-results", "SNN/ANN ratio is not energy / ann_energy", "reports",
         "{t}/run --results {t}/r.json", "ann_energy",
         _results("r.json", ("snn_vs_ann", "networks", "stdb", "ratio"), 0.5)),
    Case("inconsistent-results", "accuracy above 1", "reports", "{t}/run --results {t}/r.json", "accuracy",
         _results("r.json", ("networks", 0, "accuracy"), 1.5)),
    Case("inconsistent-results", "per-neuron rate disagrees with the layer's spikes", "reports",
         "{t}/run --results {t}/r.json", "avg_spikes_per_neuron",
         _results("r.json", ("networks", 0, "layers", 1, "avg_spikes_per_neuron"), 3.0)),
    Case("inconsistent-results", "more active neuron updates than updates", "reports",
         "{t}/run --results {t}/r.json", "active",
         _results("r.json", ("networks", 0, "layers", 0, "active_neuron_updates"), 10 ** 12)),
    Case("inconsistent-results", "ANN MACs are not the sum of its layers", "reports",
         "{t}/run --results {t}/r.json", "macs", _results("r.json", ("ann_baseline", "macs"), 3)),
    Case("inconsistent-results", "trainer summary accuracy of 150 %", "reports",
         "{t}/run --trainer-summary {t}/s.json", "percentage",
         edit_json("run/trainer_summary.json", "s.json", _set(["accuracy", 1, "accuracy"], 150.0))),
    Case("inconsistent-results", "sweep point of an unknown network", "reports", "{t}/run --results {t}/r.json",
         "sweep", _results("r.json", ("sweep",), [{"network": "ghost", "timesteps": 4, "accuracy": 0.5,
                                                     "spikes_per_image": 3.0}])),

    # 6. arguments and output folders -----------------------------------------------------
    Case("arguments", "stdb --timesteps 0", "trainer", f"stdb {{t}}/run/converted.pt --timesteps 0 {Q}",
         "--timesteps"),
    Case("arguments", "eval --timesteps -3", "trainer", f"eval {{t}}/run/converted.pt --timesteps -3 {Q}",
         "--timesteps"),
    Case("arguments", "scratch --timesteps 0", "trainer", f"scratch --out {{t}}/s.pt --timesteps 0 {Q}",
         "--timesteps"),
    Case("arguments", "export --timesteps 0", "export.to_lava", "{t}/run/converted.pt --timesteps 0", "--timesteps"),
    Case("arguments", "hwsim -T -1", "hwsim.run", f"{G2} -T -1 {HW}", "--timesteps"),
    Case("arguments", "pipeline --timesteps 0", "pipeline", "--timesteps 0 --runs {t}/runs", "--timesteps"),
    Case("arguments", "pipeline --methods without the hybrid", "pipeline", "--methods spikebp --runs {t}/runs",
         "--methods"),
    Case("arguments", "pipeline --methods with an unknown method", "pipeline",
         "--methods hybrid,stbp --runs {t}/runs", "unknown method 'stbp'"),
    Case("arguments", "checkpoint whose normalisation has std = 0", "trainer", f"eval {{t}}/std0.pt {Q}", "std",
         edit_checkpoint("run/converted.pt", "std0.pt", lambda r: r["data"]["normalisation"].update(std=[0.0]))),
    Case("arguments", "convert into a folder that refuses writes", "trainer",
         f"convert {{t}}/ann.pt --timesteps 4 --out {{t}}/c.pt {Q}", "c.pt", fault="no-permission"),
    Case("arguments", "export into a folder that refuses writes", "export.to_lava", f"{{t}}/run/converted.pt "
         f"{OUT_EXP} {EXP}", "Permission denied", fault="no-permission"),
    Case("arguments", "ann into a folder that refuses writes", "trainer",
         f"ann --out {{t}}/new.pt --epochs 1 --train-subset 100 {Q}", "new.pt", fault="no-permission"),
    Case("arguments", "export onto a full disk", "export.to_lava", f"{{t}}/run/converted.pt {OUT_EXP} {EXP}",
         "No space left", fault="no-space"),
    Case("arguments", "hwsim onto a full disk", "hwsim.run", f"{G2} {IN} {OUT_HW} {HW}", "No space left",
         fault="no-space"),
    Case("arguments", "reports onto a full disk", "reports", "{t}/run", "No space left", fault="no-space"),
    Case("arguments", "convert onto a full disk", "trainer", f"convert {{t}}/ann.pt --timesteps 4 --out {{t}}/c.pt {Q}",
         "No space left", fault="no-space"),
    Case("arguments", "export --out is a file", "export.to_lava", "{t}/run/converted.pt --out {t}/ann.pt",
         "is a file"),
    Case("arguments", "reports --out is a file", "reports", "{t}/run --out {t}/ann.pt", "is a file"),
    Case("arguments", "hwsim --sweep 0,4", "hwsim.run", f"{G2} {IN} --sweep 0,4 {HW}", "--sweep"),
    Case("arguments", "hwsim --sweep a,b", "hwsim.run", f"{G2} {IN} --sweep a,b {HW}", "--sweep"),
    Case("arguments", "--image-size for a data set of fixed size", "trainer",
         f"ann --out {{t}}/x.pt --image-size 16 --epochs 1 {Q}", "--image-size"),
    Case("arguments", "hwsim -T beyond any memory", "hwsim.run", f"{G2} --samples 2 -T 10000000000000 {OUT_HW} {HW}",
         "must be an integer in 1..100000"),
    Case("arguments", "eval --timesteps beyond any memory", "trainer",
         f"eval {{t}}/run/stdb.pt --timesteps 10000000000000 --eval-samples 2 {Q}", "must be an integer in 1..100000"),
    Case("arguments", "ann --lr 10 kills every ReLU in the first epoch", "trainer",
         f"ann --out {{t}}/dead.pt --lr 10 --epochs 3 --train-subset 300 {Q}", "outputs are silent"),
    Case("arguments", "ann --batch-size 0", "trainer", f"ann --out {{t}}/x.pt --batch-size 0 {Q}", "--batch-size"),
    Case("arguments", "ann --seed -1", "trainer", f"ann --out {{t}}/x.pt --seed -1 {Q}", "--seed"),
    Case("arguments", "export --weight-bits 12", "export.to_lava", "{t}/run/converted.pt --weight-bits 12",
         "--weight-bits"),
    Case("arguments", "export --samples -1", "export.to_lava", "{t}/run/converted.pt --samples -1", "--samples"),
    Case("arguments", "hwsim --threads 0", "hwsim.run", f"{G2} {IN} --threads 0 {HW}", "--threads"),
    Case("arguments", "hwsim --threads 1000000", "hwsim.run", f"{G2} {IN} --threads 1000000 {HW}", "--threads"),
    Case("arguments", "hwsim --samples beyond the inputs file", "hwsim.run", f"{G2} {IN} --samples 999 {HW}",
         "--samples"),
    Case("arguments", "chain --name with a slash", "trainer", f"chain --runs {{t}}/runs --name ../x {Q}", "--name"),
    Case("arguments", "ann --conv-dropout 1", "trainer", f"ann --out {{t}}/x.pt --conv-dropout 1 {Q}",
         "--conv-dropout"),

    # 7. inputs that used to get an unclear message ----------------------------------------
    Case("unclear-before", "ann --epochs 0", "trainer", f"ann --out {{t}}/x.pt --epochs 0 {Q}", "--epochs"),
    Case("unclear-before", "ann --out names a folder", "trainer", f"ann --out {{t}}/run --epochs 1 {Q}",
         "is a folder"),
    Case("unclear-before", "convert --timesteps 0", "trainer", f"convert {{t}}/ann.pt --timesteps 0 {Q}",
         "--timesteps"),
    Case("unclear-before", "stdb --leak 1.5", "trainer", f"stdb {{t}}/run/converted.pt --timesteps 4 --leak 1.5 {Q}",
         "--leak"),
    Case("unclear-before", "scratch --leak 0", "trainer", f"scratch --out {{t}}/s.pt --timesteps 4 --leak 0 {Q}",
         "--leak"),
    Case("unclear-before", "random-bytes checkpoint", "trainer", f"eval {{t}}/rand.pt {Q}", "not a torch zip",
         write_bytes("rand.pt", np.random.default_rng(1).bytes(2000))),
    Case("unclear-before", "truncated checkpoint", "export.to_lava", "{t}/half.pt --out {t}/e", "half.pt",
         truncated("run/converted.pt", "half.pt")),
    Case("unclear-before", "zip that is not a checkpoint", "trainer", f"eval {{t}}/z.pt {Q}", "z.pt",
         zip_of("z.pt", {"hello.txt": b"hi"})),
    Case("unclear-before", "foreign checkpoint (a plain state_dict)", "export.to_lava", "{t}/sd.pt --out {t}/e",
         "not a hybrid-snn-checkpoint", lambda t: torch.save({"w": torch.zeros(3)}, t / "sd.pt")),
    Case("unclear-before", "checkpoint with a bias", "export.to_lava", "{t}/b.pt --out {t}/e", "bias",
         edit_checkpoint("run/converted.pt", "b.pt",
                         lambda r: r["state_dict"].__setitem__("layers.0.bias", torch.zeros(32)))),
    Case("unclear-before", "checkpoint with max pooling", "export.to_lava", "{t}/m.pt --out {t}/e", "maxpool",
         edit_checkpoint("run/converted.pt", "m.pt",
                         lambda r: r["arch"]["layers"].__setitem__(2, {"kind": "maxpool", "kernel": 2}))),
    Case("unclear-before", "checkpoint with batch norm", "export.to_lava", "{t}/bn.pt --out {t}/e", "batch norm",
         edit_checkpoint("run/converted.pt", "bn.pt",
                         lambda r: r["state_dict"].__setitem__("layers.1.running_mean", torch.zeros(32)))),
    Case("unclear-before", "ANN checkpoint to export", "export.to_lava", "{t}/ann.pt --out {t}/e", "no thresholds"),
    Case("unclear-before", "missing checkpoint", "export.to_lava", "{t}/missing.pt --out {t}/e", "no such checkpoint"),
    Case("unclear-before", "unknown architecture", "trainer", f"chain --runs {{t}}/runs --arch vgg7 {Q}", "--arch"),
    Case("unclear-before", "hwsim --graph without a label", "hwsim.run",
         f"--graph {{t}}/run/export/converted/coregraph.npz {IN} {HW}", "LABEL=PATH"),
    Case("unclear-before", "unknown energy model", "hwsim.run", f"{G2} {IN} {HW} --energy-model nonsense",
         "nonsense"),
    Case("unclear-before", "graph of a newer version", "hwsim.run", f"--graph a={{t}}/new.npz {IN} {HW}", "newer",
         edit_graph("run/export/converted/coregraph.npz", "new.npz", lambda h, a: h.update(version=99))),
    Case("unclear-before", "graphs of different T", "hwsim.run",
         f"--graph a={{t}}/run/export/converted/coregraph.npz --graph b={{t}}/t7.npz {IN} {HW}", "T=7",
         edit_graph("run/export/stdb/coregraph.npz", "t7.npz", lambda h, a: h.update(timesteps=7))),
    Case("unclear-before", "inputs file for another T", "hwsim.run", f"{G2} {IN} --timesteps 3 {HW}", "T=6"),
    Case("unclear-before", "no run folder to default to", "hwsim.run", f"--runs {{t}}/nothing {HW}",
         "--graph LABEL=PATH"),
    Case("unclear-before", "results file missing", "reports", "{t}/nothing", "no such results file"),
    Case("unclear-before", "results of another format", "reports", "{t}/run --results {t}/r.json", "format",
         _results("r.json", ("format",), "something-else")),
    Case("unclear-before", "results of a newer version", "reports", "{t}/run --results {t}/r.json", "newer",
         _results("r.json", ("version",), 99)),
    Case("unclear-before", "results that are not JSON", "reports", "{t}/run --results {t}/r.json", "corrupt",
         write_bytes("r.json", b"{not json")),
    Case("unclear-before", "named trainer summary missing", "reports", "{t}/run --trainer-summary {t}/nope.json",
         "nope.json"),
    Case("unclear-before", "a folder named as the graph", "hwsim.run", f"--graph a={{t}}/run {IN} {HW}", "is a folder"),
    Case("unclear-before", "a folder named as the checkpoint", "export.to_lava", "{t}/run --out {t}/e", "is a folder"),
    Case("unclear-before", "graph file missing", "hwsim.run", f"--graph a={{t}}/nope.npz {IN} {HW}", "nope.npz"),
    Case("unclear-before", "a results file named as the trainer summary", "reports",
         "{t}/run --trainer-summary {t}/run/hwsim/results.json", "format"),
    Case("unclear-before", "pipeline with an unknown energy model stops before training", "pipeline",
         "--runs {t}/runs --energy-model nope --quiet", "nope"),
    Case("unclear-before", "checkpoint with an unknown surrogate", "export.to_lava", "{t}/sg.pt --out {t}/e",
         "surrogate", edit_checkpoint("run/stdb.pt", "sg.pt", lambda r: r["snn"]["surrogate"].update(kind="relu"))),
    Case("unclear-before", "energy model with an unknown field", "hwsim.run",
         f"{G2} {IN} {HW} --energy-model {{t}}/e.json", "unknown field",
         edit_json("energy.json", "e.json", _set(["e_bogus"], 1.0))),
    Case("outside-folder", "a planted journal renames over a file outside the run (hwsim)", "hwsim.run",
         f"--graph a={{t}}/run/export/converted/coregraph.npz {IN} {OUT_HW} {HW}", "refused, the journal names",
         planted_journal("run/export/converted", "../../../victim.txt")),
    Case("outside-folder", "a planted journal names an absolute path (reports)", "reports",
         "{t}/run", "refused, the journal names", planted_journal("run", "{t}/victim.txt")),
    Case("outside-folder", "a planted journal renames a file that is not its temporary (trainer)", "trainer",
         f"eval {{t}}/run/converted.pt {Q}", "refused, the journal names",
         lambda t: (t / "run" / ".results.json.journal.999999.b.commit").write_text(
             json.dumps([["../victim.txt", "converted.pt"]]))),
    Case("outside-folder", "a planted journal renames through a link out of the run (hwsim)", "hwsim.run",
         f"{G2} {IN} {OUT_HW} {HW}", "refused, the journal names",
         lambda t: (planted_journal("run/export/converted", "out/victim.txt")(t),
                    (t / "run" / "export" / "converted" / "out").symlink_to(t))),
    Case("outside-folder", "a planted journal climbs out from a subfolder (export)", "export.to_lava",
         "{t}/run/stdb.pt --out {t}/run/export/converted --eval-samples 0 --calibration-samples 0",
         "refused, the journal names", planted_journal("run/export/converted", "report/../../../../victim.txt")),
    Case("outside-folder", "a planted journal that is not a list of renames (reports)", "reports", "{t}/run",
         "refused, the journal names", lambda t: (t / "run" / ".results.json.journal.999999.b.commit").write_text(
             json.dumps({"../victim.txt": "x"}))),
    Case("outside-folder", "convert writing over its own input", "trainer",
         f"convert {{t}}/ann.pt --timesteps 4 --out {{t}}/ann.pt {Q}", "own input"),
    Case("outside-folder", "stdb writing over its converted input", "trainer",
         f"stdb {{t}}/run/converted.pt --timesteps 4 --epochs 1 --out {{t}}/run/converted.pt {Q}", "own input"),
    Case("malformed-values", "graph core with a zero stride", "hwsim.run", f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}",
         "stride", edit_graph("run/export/converted/coregraph.npz", "g.npz", _graph_core(0, "stride", [0, 1]))),
    Case("malformed-values", "graph core whose ANN MACs exceed its synapses (a 1e-8 energy ratio)", "hwsim.run",
         f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}", "ann_macs",
         edit_graph("run/export/converted/coregraph.npz", "g.npz", _graph_core(0, "ann_macs", 10 ** 12))),
    Case("malformed-values", "graph core with ANN MACs past float range", "hwsim.run",
         f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}", "ann_macs",
         edit_graph("run/export/converted/coregraph.npz", "g.npz", _graph_core(0, "ann_macs", 10 ** 400))),
    Case("unclear-before", "energy model nested 100,000 deep", "hwsim.run", f"{G2} {IN} {HW} --energy-model {{t}}/e.json",
         "nested too deep", lambda t: (t / "e.json").write_text("[" * 100000 + "]" * 100000)),
    Case("unclear-before", "results file nested 100,000 deep", "reports", "{t}/run --results {t}/r.json",
         "nested too deep", lambda t: (t / "r.json").write_text('{"a":' * 100000 + "1" + "}" * 100000)),
    Case("unclear-before", "graph header nested 100,000 deep", "hwsim.run", f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}",
         "nested too deep", lambda t: np.savez(t / "g.npz", __graph__=np.frombuffer(
             ("[" * 100000 + "]" * 100000).encode(), dtype=np.uint8))),
    Case("unclear-before", "a symbolic link loop as the graph", "hwsim.run", f"--graph a={{t}}/loop {IN} {OUT_HW} {HW}",
         "symbolic link", lambda t: (t / "loop").symlink_to(t / "loop")),
    Case("unclear-before", "a symbolic link loop as the output folder", "hwsim.run", f"{G2} {IN} --out {{t}}/loop {HW}",
         "symbolic link", lambda t: (t / "loop").symlink_to(t / "loop")),
    Case("arguments", "convert onto a disk that fills while torch writes", "trainer",
         f"convert {{t}}/ann.pt --timesteps 4 --out {{t}}/c.pt {Q}", "cannot write", fault="torch-full"),
    Case("sized-before", "a decompression-bomb PNG in an image folder", "trainer",
         f"ann --dataset folder --data-root {{t}}/bomb --out {{t}}/x.pt --epochs 1 {Q}", "decompression bomb",
         chain(image_folder("bomb", {"cat": 2, "dog": 2}),
               lambda t: __import__("PIL.Image").Image.new("L", (10000, 10000)).save(t / "bomb/train/cat/big.png"))),
    Case("sized-before", "a small checkpoint whose config declares a 10^6-wide layer", "trainer",
         f"eval {{t}}/huge.pt {Q}", "do not fit",
         edit_checkpoint("run/converted.pt", "huge.pt", lambda r: next(
             l for l in r["arch"]["layers"] if l["kind"] == "linear").update(out_features=10 ** 6))),
    Case("inconsistent-results", "a trainer summary of another run (another data set)", "reports",
         "{t}/run --trainer-summary {t}/s.json", "not from the same run",
         edit_json("run/trainer_summary.json", "s.json", _set(["dataset"], "mnist"))),
    Case("inconsistent-results", "results whose two stage labels are swapped", "reports",
         "{t}/run --results {t}/r.json", "labelled 'stdb', a trainer stage",
         _results("r.json", ("networks", 0, "label"), "stdb", ("networks", 1, "label"), "converted")),
    Case("inconsistent-results", "hwsim labelling the STDB graph 'converted'", "hwsim.run",
         f"--graph converted={{t}}/run/export/stdb/coregraph.npz {IN} {OUT_HW} {HW}", "the 'stdb' network"),
    Case("inconsistent-results", "a trainer summary of another architecture", "reports",
         "{t}/run --trainer-summary {t}/s.json", "not from the same run",
         edit_json("run/trainer_summary.json", "s.json", _set(["arch"], "vgg16"))),
    # work that used to run until killed: T is bounded before anything starts (records.timesteps.MAX_TIMESTEPS)
    Case("sized-before", "eval --timesteps 1e9", "trainer", f"eval {{t}}/run/converted.pt --timesteps 1000000000 {Q}",
         "--timesteps"),
    Case("sized-before", "export --calibration-timesteps 1e9", "export.to_lava",
         "{t}/run/stdb.pt --out {t}/e --calibration-timesteps 1000000000", "--calibration-timesteps"),
    Case("sized-before", "checkpoint recording T = 1e9", "export.to_lava", "{t}/big.pt --out {t}/e", "SNN timesteps",
         edit_checkpoint("run/stdb.pt", "big.pt", lambda r: r["snn"].update(timesteps=10 ** 9))),
    Case("sized-before", "graph recording T = 1e9", "hwsim.run", f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}",
         "timesteps: T must be an integer in", edit_graph("run/export/converted/coregraph.npz", "g.npz",
                                                      lambda h, a: h.update(timesteps=10 ** 9))),
    Case("sized-before", "hwsim --sweep up to 1e9", "hwsim.run", f"{G2} {IN} {OUT_HW} {HW} --sweep 4,1000000000",
         "--sweep"),
    Case("sized-before", "pipeline --timesteps-large 1e9", "pipeline",
         "--runs {t}/runs --timesteps-large 1000000000 --quiet", "--timesteps-large"),
    # work within the T bound whose memory grows with T: estimated from the options and files, refused
    # before it starts (records.sizing), where it used to be killed by the kernel with nothing on stderr
    Case("sized-before", "stdb backpropagating through 100,000 steps", "trainer",
         f"stdb {{t}}/run/converted.pt --out {{t}}/s.pt --timesteps 100000 --epochs 1 {Q}", "memory is available"),
    Case("sized-before", "spikebp at T = 20,000 and a batch of 4,096", "trainer",
         f"spikebp {{t}}/run/converted.pt --out {{t}}/s.pt --timesteps 20000 --batch-size 4096 --epochs 1 {Q}",
         "--batch-size 4096"),
    Case("sized-before", "export evaluating 100,000 images at T = 100,000", "export.to_lava",
         "{t}/run/stdb.pt --out {t}/e --timesteps 100000 --eval-samples 100000", "--eval-samples 100000"),
    Case("sized-before", "export of a checkpoint recording T = 100,000", "export.to_lava",
         "{t}/big.pt --out {t}/e --eval-samples 20000", "big.pt's T = 100000",
         edit_checkpoint("run/stdb.pt", "big.pt", lambda r: r["snn"].update(timesteps=100_000))),
    Case("sized-before", "a NIR graph calibrated on 20,000 images at T = 100,000", "export.to_lava",
         "{t}/g.nir --dataset digits --out {t}/n --calibration-samples 20000 --calibration-timesteps 100000",
         "--calibration-samples 20000", lambda t: __import__("export.nir_export").nir_export.export_nir(
             __import__("export.graph").graph.load_graph(t / "run/export/converted/coregraph.npz"), t / "g.nir")),
    Case("sized-before", "pipeline fine-tuning at T = 100,000", "pipeline", "--runs {t}/runs --timesteps 100000 --quiet",
         "memory is available"),
    # values that used to be converted or truncated silently (T 4.9 -> 4, "1.5" -> 1.5, vth 168.9 -> 168)
    Case("malformed-values", "checkpoint with T = 4.9", "trainer", f"eval {{t}}/t.pt {Q}", "SNN timesteps: T must be an integer",
         edit_checkpoint("run/converted.pt", "t.pt", lambda r: r["snn"].update(timesteps=4.9))),
    Case("malformed-values", "checkpoint with a threshold stored as a string", "trainer", f"eval {{t}}/s.pt {Q}",
         "thresholds must be a number",
         edit_checkpoint("run/converted.pt", "s.pt", lambda r: r["snn"]["thresholds"].__setitem__(0, "1.5"))),
    Case("malformed-values", "checkpoint with v_init beyond the threshold", "trainer", f"eval {{t}}/v.pt {Q}",
         "v_init", edit_checkpoint("run/converted.pt", "v.pt",
                                   lambda r: r["snn"].update(v_init=[1.5] * len(r["snn"]["thresholds"])))),
    Case("malformed-values", "checkpoint with an unknown input rule", "trainer", f"eval {{t}}/e.pt {Q}",
         "input encoding", edit_checkpoint("run/converted.pt", "e.pt", lambda r: r["snn"].update(encoding="burst"))),
    Case("malformed-values", "graph core with vth 168.9", "hwsim.run", f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}",
         "vth must be an integer", edit_graph("run/export/converted/coregraph.npz", "g.npz", _graph_core(0, "vth", 168.9))),
    Case("malformed-values", "graph core with a stride stored as strings", "hwsim.run",
         f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}", "stride must be",
         edit_graph("run/export/converted/coregraph.npz", "g.npz", _graph_core(0, "stride", ["1", "1"]))),
    Case("malformed-values", "graph core with v_init above its threshold", "hwsim.run",
         f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}", "v_init",
         edit_graph("run/export/converted/coregraph.npz", "g.npz", _graph_core(0, "v_init", 10 ** 7))),
    Case("malformed-values", "graph with an unknown input rule", "hwsim.run", f"--graph a={{t}}/g.npz {IN} {OUT_HW} {HW}",
         "rule", edit_graph("run/export/converted/coregraph.npz", "g.npz", lambda h, a: h["input"].update(rule="burst"))),
]
