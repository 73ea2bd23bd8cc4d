"""A user's own network as the chain's ANN checkpoint: load the module from their file,
map it (``trainer.torch_import``), check that the mapped ANN computes what the module
computes on the data set's test images, and record both networks' accuracy.

``python -m trainer import mynet.py:build --weights mynet.pt --dataset digits --out ann.pt``
runs ``build()`` from the file (the user's own code: this executes it), loads the state_dict
and writes the ANN checkpoint the other stages take. The module takes the data set's images
as the chain normalises them (``trainer.data.load_dataset``: ``records.encoding.Normalisation``),
which the checkpoint records.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from trainer.models import ANN
from trainer.torch_import import ImportRefused, import_module

TOLERANCE = 1e-4     # |module - imported| allowed, relative to the largest |logit| (float32 rounding of a fold)


def load_user_module(spec: str, weights: str | None = None) -> nn.Module:
    """``path/to/file.py:name``: ``name`` from that file, called with no arguments if it is a
    function or class (an ``nn.Module`` instance is taken as it is), then ``weights`` (a
    state_dict saved by ``torch.save``, or a dict holding one under "state_dict") loaded
    strictly. ValueError names the file and the problem."""
    path, sep, attr = spec.rpartition(":")
    if not sep or not path or not attr.isidentifier():
        raise ValueError(f"{spec}: expected FILE.py:NAME (a function, class or module object in the file)")
    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise ValueError(f"{path}: not a Python file")
    loader = importlib.util.spec_from_file_location(f"_user_network_{file.stem}", file)
    code = importlib.util.module_from_spec(loader)
    sys.path.insert(0, str(file.resolve().parent))         # its own imports of files beside it
    try:
        loader.loader.exec_module(code)
        found = getattr(code, attr, None)
        if found is None:
            raise ValueError(f"{path}: defines no {attr!r}")
        module = found if isinstance(found, nn.Module) else found()
    except ValueError:
        raise
    except Exception as exc:         # the user's code: any error is theirs to fix, in one line
        raise ValueError(f"{spec}: building the module failed ({type(exc).__name__}: {exc})") from None
    finally:
        sys.path.remove(str(file.resolve().parent))
    if not isinstance(module, nn.Module):
        raise ValueError(f"{spec}: returned a {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{weights}: not a readable torch state_dict ({type(exc).__name__}: {exc})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{weights}: not a state_dict (a dict of tensors)")
        if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
            raise ValueError(f"{weights}: holds non-finite numbers")
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{weights}: does not fit {spec} ({' '.join(str(exc).split())[:300]})") from None
    return module.float().cpu().eval()


def imported_checkpoint(module: nn.Module, bundle, *, name: str, seed: int = 0, command=None,
                        compare_batches: int = 4):
    """The ANN checkpoint (stage "ann") of ``module`` on ``bundle``'s data set, after checking
    on up to ``compare_batches`` test batches of 256 that it computes what the module does.
    Metrics: both networks' test accuracy and the largest difference of their logits."""
    from trainer.checkpoint import Checkpoint, provenance
    from trainer.data import batches, data_record
    from trainer.evaluate import evaluate_ann

    cfg, state = import_module(module, tuple(bundle.input_shape), name=name, num_classes=len(bundle.class_names))
    ann = ANN(cfg)
    ann.load_state_dict(state)
    module.eval(), ann.eval()
    worst = scale = 0.0
    for b, (x, _) in enumerate(batches(bundle, "test", 256, shuffle=False)):
        if b >= compare_batches:
            break
        with torch.no_grad():
            logits = module(x)
            worst = max(worst, float((logits - ann(x)).abs().max()))
            scale = max(scale, float(logits.abs().max()))
    if not worst <= TOLERANCE * max(scale, 1.0):
        raise ImportRefused(f"the imported network's logits differ from the module's by {worst:.3g} (largest "
                            f"|logit| {scale:.3g}): the module computes something its trace does not show")
    metrics = {"test_acc": evaluate_ann(ann, bundle), "module_test_acc": evaluate_ann(module, bundle),
               "max_abs_difference": worst, "imported": name}
    return Checkpoint(stage="ann", arch=cfg, state_dict=state, data=data_record(bundle, seed), metrics=metrics,
                      provenance=provenance(command))
