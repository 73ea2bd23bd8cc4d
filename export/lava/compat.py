"""Make lava-nc 0.10.0 importable on Python 3.11, without editing the installed package.

Lava's ``lava.magma.compiler.var_model`` uses an instance of its dataclass
``ByteEncoder`` as a field default; Python 3.11 rejects unhashable (mutable) defaults.
While that one module is first imported, ``dataclasses.dataclass`` is wrapped so that
``ByteEncoder`` alone gets ``unsafe_hash=True``; the original is restored afterwards.
Every module of ours that needs Lava calls ``import_lava()`` before importing it.

Second fix: Lava's ``message_infrastructure.multiprocessing`` calls
``multiprocessing.set_start_method('fork')`` at import, which raises once anything in the
process has fixed the start method (tqdm's write lock does). While that module is first
imported, a call that asks for the method already in force is accepted as a no-op.
"""
from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import sys

_PATCHED_MODULE = "lava.magma.compiler.var_model"
_PATCHED_CLASS = "ByteEncoder"
_MP_MODULE = "lava.magma.runtime.message_infrastructure.multiprocessing"


def _dataclass_hashing_byte_encoder(original):
    """``dataclasses.dataclass`` that adds ``unsafe_hash=True`` to Lava's ByteEncoder only."""
    def dataclass(cls=None, /, **kwargs):
        def wrap(c):
            if c.__module__ == _PATCHED_MODULE and c.__qualname__ == _PATCHED_CLASS:
                return original(c, **{**kwargs, "unsafe_hash": True})
            return original(c, **kwargs)
        return wrap if cls is None else wrap(cls)
    return dataclass


def _tolerant_set_start_method(original):
    """``set_start_method`` that accepts re-setting the method already in force."""
    def set_start_method(method, force=False):
        if not force and multiprocessing.get_start_method(allow_none=True) == method:
            return None
        return original(method, force=force)
    return set_start_method


def import_lava() -> None:
    """Import Lava's patched module once (idempotent); ImportError says how to install Lava."""
    if _PATCHED_MODULE in sys.modules:
        return
    original = dataclasses.dataclass
    original_start = multiprocessing.set_start_method
    dataclasses.dataclass = _dataclass_hashing_byte_encoder(original)
    multiprocessing.set_start_method = _tolerant_set_start_method(original_start)
    try:
        importlib.import_module(_PATCHED_MODULE)
        importlib.import_module(_MP_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "lava":
            raise ImportError("lava-nc 0.10.0 is not installed; install it with install.sh "
                              "(pip install --no-deps --ignore-requires-python lava-nc==0.10.0)") from exc
        raise
    finally:
        dataclasses.dataclass = original
        multiprocessing.set_start_method = original_start
