"""Load the scripts of the top-level ``tools/`` folder from their file paths (it is not a package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
HELPERS = ("weight_conversion", "caffe_layouts")  # modules next to the scripts, found on sys.path when run


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py``; its helper modules are registered under the names the scripts import."""
    for helper in HELPERS:
        if helper not in sys.modules:
            _load(helper, TOOLS / f"{helper}.py")
    return sys.modules.get(f"tools_{name}") or _load(f"tools_{name}", TOOLS / f"{name}.py")


def _load(module_name: str, path: Path) -> ModuleType:
    """The importlib recipe: registered in ``sys.modules`` before running (dataclasses look it up there)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def conversion() -> ModuleType:
    load_tool("convert_mxnet_params")
    return sys.modules["weight_conversion"]


@pytest.fixture(scope="session")
def mxnet_tool() -> ModuleType:
    return load_tool("convert_mxnet_params")


@pytest.fixture(scope="session")
def caffe_tool() -> ModuleType:
    return load_tool("convert_caffemodel")


@pytest.fixture(scope="session")
def caffe_layouts() -> ModuleType:
    load_tool("convert_caffemodel")
    return sys.modules["caffe_layouts"]
