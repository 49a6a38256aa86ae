"""Import piq and lpips (which import torchvision) on machines where torch is a CPU build.

Why: the pinned torchvision wheel is built for CUDA (e.g. 0.28.0+cu130). With a CPU torch its compiled
extension (`_C.so`) cannot load, and `import torchvision` then dies in `torchvision/_meta_registrations.py`
with "RuntimeError: operator torchvision::nms does not exist", because that module registers meta
kernels for compiled operators that were never registered. piq and lpips use torchvision's models and
pure-Python code only, never those operators, so the meta registrations can be skipped: an empty module
object at `sys.modules['torchvision._meta_registrations']` lets the package import and work.

Decision rule (so a machine with a matching torchvision, like the GPU machine, is never touched):
import torchvision normally first; apply the workaround and retry only when that import fails with
"operator torchvision::<op> does not exist" AND torchvision's extension reports no compiled ops.
Any other failure is raised unchanged.
"""
from __future__ import annotations

import importlib
import re
import sys
import types

_MISSING_OPERATOR = re.compile(r"operator torchvision::\w+ does not exist")
_META_MODULE = "torchvision._meta_registrations"

# True once the workaround was needed and applied in this process; None until torchvision is imported.
workaround_applied: bool | None = None


def ensure_torchvision() -> types.ModuleType:
    """Import torchvision, applying the CPU-torch workaround only when the normal import fails for that reason."""
    global workaround_applied
    if "torchvision" in sys.modules:
        if workaround_applied is None:
            workaround_applied = _is_stub(sys.modules.get(_META_MODULE))
        return sys.modules["torchvision"]
    try:
        module = importlib.import_module("torchvision")
        workaround_applied = False
        return module
    except RuntimeError as exc:
        if not (_MISSING_OPERATOR.search(str(exc)) and not _extension_has_ops()):
            raise
    _forget_partial_torchvision()
    stub = types.ModuleType(_META_MODULE)
    stub.__doc__ = "rbmnet stub: torchvision's compiled ops are unavailable on this CPU torch (rbmnet.compat)"
    stub._rbmnet_stub = True
    sys.modules[_META_MODULE] = stub
    module = importlib.import_module("torchvision")
    workaround_applied = True
    return module


def import_piq() -> types.ModuleType:
    ensure_torchvision()
    return importlib.import_module("piq")


def import_lpips() -> types.ModuleType:
    ensure_torchvision()
    return importlib.import_module("lpips")


def _extension_has_ops() -> bool:
    extension = sys.modules.get("torchvision.extension")
    if extension is None or not hasattr(extension, "_has_ops"):
        return False  # the failed import did not get as far as reporting; the error message decides
    return bool(extension._has_ops())


def _forget_partial_torchvision() -> None:
    # The failed import leaves half-initialised submodules behind; the retry runs them afresh.
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def _is_stub(module) -> bool:
    return bool(getattr(module, "_rbmnet_stub", False))
