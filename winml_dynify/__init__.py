"""winml-dynify: make a statically exported ONNX model dynamic after export, verified by parity."""

from .api import DynifyResult, dynify
from .errors import DynifyError, RefusedError, UsageError, VerificationError
from .inspection import inspect_model

__all__ = ["DynifyError", "DynifyResult", "RefusedError", "UsageError", "VerificationError", "dynify",
           "inspect_model"]
