"""winml-dynify: make a statically exported ONNX model dynamic after export, verified by parity."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("winml-dynify")
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "unknown"


from .api import DynifyResult, dynify
from .errors import DynifyError, RefusedError, UsageError, VerificationError
from .inspection import inspect_model

__all__ = ["DynifyError", "DynifyResult", "RefusedError", "UsageError", "VerificationError", "dynify",
           "inspect_model"]
