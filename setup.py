"""Installation script for wsss, a toolkit for weakly-supervised semantic segmentation."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "wsss" / "__init__.py").read_text()).group(1)

setup(
    name="wsss",
    version=VERSION,
    description="Weakly-supervised semantic segmentation from image-level labels: PSA, SEAM, single-stage, WS-FCN",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["wsss", "wsss.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.24",
        "scipy>=1.10",
        "imageio>=2.31",
        "pillow>=9.5",
        "click>=8.1",
        "joblib>=1.3",
        "pydensecrf2>=1.1",  # installs the `pydensecrf` module; the PyPI `pydensecrf` no longer builds
        "PyYAML>=6.0",       # pipeline recipes and --config files
        "tqdm>=4.65",        # progress bars on a terminal
        "tensorboard>=2.14", # training scalars and CAM images
        "pycocotools>=2.0.7", # COCO polygons and RLE (wsss data prepare coco)
        "matplotlib>=3.7",   # the charts of the `wsss demo` report
    ],
    extras_require={"test": ["pytest>=7.4"]},
    entry_points={"console_scripts": ["wsss=wsss.cli.main:main"]},
)
