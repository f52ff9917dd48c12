"""What the Triton kernel tests share: skipping where triton cannot be installed, and the
device the kernels run on (compiled on a GPU machine; on CPU tensors in Triton's
interpreter elsewhere, which conftest.py switches on before anything imports triton)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from ngp_engine.encoding import backends


def require_triton() -> None:
    """Skip the calling test module when triton is not installed."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (scripts/setup.sh installs it on Linux x86_64, "
                    "the only platform with a triton wheel)", allow_module_level=True)


DEVICE = (torch.device("cuda") if torch.cuda.is_available() and not backends.triton_interpreted()
          else torch.device("cpu"))
