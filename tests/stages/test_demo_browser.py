"""The demo's HTML report opened in a real headless browser (Chromium), which takes a screenshot of it.

Slow (a small demo run plus a browser start), so kept out of CI: ``python -m pytest -m slow
tests/stages/test_demo_browser.py``. Needs ``chromium`` on the PATH (Debian: ``apt-get install -y chromium``);
the screenshot is kept at ``$WSSS_SCREENSHOT`` when that is set.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.stages.test_demo import _mini_recipes
from wsss.stages import demo
from wsss.stages.demo_plots import ROLE_COLOURS

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def screenshot(page, png, width: int = 1400, height: int = 2400) -> np.ndarray:
    """Render ``page`` (a local HTML file) in headless Chromium; returns the screenshot as (H, W, 3) uint8."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium on the PATH (apt-get install -y chromium)")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={png}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB"))


def _pixels_of(shot: np.ndarray, rgb) -> int:
    return int((np.abs(shot.astype(int) - np.asarray(rgb)).sum(-1) < 12).sum())


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    cfg = demo.DemoConfig(out=tmp_path / "demo", n_train=8, n_val=4, size=80, recipes=_mini_recipes(tmp_path),
                          report_images=3, device="cpu")
    _, page = demo.run(cfg)
    shot = screenshot(page, os.environ.get("WSSS_SCREENSHOT") or tmp_path / "shot.png")
    assert (shot < 250).any(-1).mean() > 0.1  # not a blank page: the table, charts and overlays are drawn
    # The mIoU chart is on the screen: its three role colours (legend patches and bars), at readable size.
    for role, colour in ROLE_COLOURS.items():
        assert _pixels_of(shot, [int(colour[i:i + 2], 16) for i in (1, 3, 5)]) > 100, role
    # Every class swatch of the legend is on the screen in its palette colour (14 x 14 px each).
    swatches = re.findall(r"class='swatch' style='background:rgb\((\d+),(\d+),(\d+)\)'", page.read_text())
    assert len(swatches) >= 2  # background and at least one class
    for rgb in swatches:
        assert _pixels_of(shot, [int(v) for v in rgb]) >= 100, rgb
