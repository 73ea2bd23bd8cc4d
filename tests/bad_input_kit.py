"""The parts of ``tests/bad_input_corpus.py``: its classes of failure, the ``Case`` record,
and the makers of bad files, each a function that writes one new file (or folder) inside
the corpus's folder of good files ``t``."""
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


def _edit_npz(src: str, dst: str, header: str, change: Callable[[dict, dict], None]) -> Callable[[Path], None]:
    """change(header, arrays) on a copy of an .npz record whose JSON header is the array ``header``."""
    def make(t: Path) -> None:
        with np.load(t / src) as data:
            arrays = {k: data[k] for k in data.files}
        head = json.loads(bytes(arrays[header]).decode())
        change(head, arrays)
        arrays[header] = np.frombuffer(json.dumps(head).encode(), dtype=np.uint8)
        np.savez(t / dst, **arrays)
    return make


def edit_graph(src: str, dst: str, change: Callable[[dict, dict], None]) -> Callable[[Path], None]:
    """change(header, arrays) on a copy of a core graph's .npz."""
    return _edit_npz(src, dst, "__graph__", change)


def edit_inputs(dst: str, change: Callable[[dict, dict], None]) -> Callable[[Path], None]:
    """change(header, arrays) on a copy of the good inputs file."""
    return _edit_npz("run/hwsim/inputs.npz", dst, "__inputs__", change)


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


def set_at(path: list, value):
    """A change that sets doc[path...] = value."""
    def change(doc):
        for k in path[:-1]:
            doc = doc[k]
        doc[path[-1]] = value
    return change


def edit_results(dst: str, *path_value) -> Callable[[Path], None]:
    changes = [set_at(list(path_value[i]), path_value[i + 1]) for i in range(0, len(path_value), 2)]
    return edit_json("run/hwsim/results.json", dst, lambda d: [c(d) for c in changes])


def nan_weight(r):
    r["state_dict"]["layers.0.weight"][0, 0, 0, 0] = float("nan")


def inf_weights(r):
    r["state_dict"]["layers.0.weight"][:3] = float("inf")


def graph_core(i: int, key: str, value):
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
