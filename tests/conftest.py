"""Shared fixtures: one toy dataset per test session, written by the real generator in the real layouts."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("WSSS_THREADS", "1")


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """Raw toy data: ``VOCdevkit/VOC2012/...`` and ``benchmark_RELEASE/dataset/...`` under one folder."""
    from wsss.data.toy import write_toy

    root = tmp_path_factory.mktemp("toy_raw")
    write_toy(root, n_train=24, n_val=8, size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def toy_data(toy_root, tmp_path_factory):
    """The toy data prepared by ``wsss data prepare voc`` (the ``--data`` folder every stage takes)."""
    from wsss.data.prepare import prepare_voc

    out = tmp_path_factory.mktemp("toy_data")
    prepare_voc(voc_root=toy_root / "VOCdevkit" / "VOC2012", sbd_root=toy_root / "benchmark_RELEASE", out=out)
    return out
