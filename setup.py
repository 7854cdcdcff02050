"""Install metadata for qgface_plugin (``pip install -e .``; pinned sets: requirements.txt, requirements-nomx.txt).

Two dependency profiles:

* default (Python 3.11): mxnet 1.9.1, and so numpy < 1.24 and the OpenCV / scikit-image releases that support it
  (requirements.txt);
* without mxnet, on numpy 2 (requirements-nomx.txt): the plugin reads record sets with its own reader
  (``config.record_reader = "python"``, what ``"auto"`` picks there). It is the profile on Python >= 3.12 (numpy
  < 1.24 has no wheels there), and on 3.11 when ``QGFACE_WITHOUT_MXNET=1`` is set at install time:
  ``QGFACE_WITHOUT_MXNET=1 pip install -e .``.
"""
import os
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "qgface_plugin" / "__init__.py").read_text(), re.M).group(1)

#: "1" at install time: the profile without mxnet on every Python (see the module docstring).
WITHOUT_MXNET = os.environ.get("QGFACE_WITHOUT_MXNET", "").strip().lower() in ("1", "true", "yes")
#: the default profile's Pythons (the numpy < 1.24 that mxnet 1.9.1 needs has wheels up to 3.11).
WITH_MXNET = "python_version < '3.12'"
WITHOUT = "python_version >= '3.12'"

COMMON = [
    "torch>=2.1",
    "torchvision>=0.16",
    "insightface>=0.7",
    "pillow>=9.1",                 # Image.Resampling; the L view's resizes
    "easydict>=1.9",
    "onnx>=1.14",
    "onnxruntime>=1.16",
    "tensorboardX>=2.6",
]
MXNET_PROFILE = [
    "numpy>=1.21,<1.24",           # mxnet 1.9.1 needs np.bool (removed in numpy 1.24)
    "mxnet>=1.9.1,<2",
    "opencv-python-headless>=4.5,<4.12",  # 4.12+ requires numpy 2
    "scikit-image>=0.19,<0.25",     # 0.25+ requires numpy >= 1.24
]
NOMX_PROFILE = [                   # record sets read by qgface_plugin.formats (no mxnet)
    "numpy>=1.21",
    "opencv-python-headless>=4.5",
    "scikit-image>=0.19",
]


def install_requires() -> list:
    """COMMON plus one profile: chosen now with QGFACE_WITHOUT_MXNET=1, else by the installing Python (markers)."""
    if WITHOUT_MXNET:
        return COMMON + NOMX_PROFILE
    return (COMMON + [f"{r}; {WITH_MXNET}" for r in MXNET_PROFILE]
            + [f"{r}; {WITHOUT}" for r in NOMX_PROFILE])


def plot_requires() -> list:
    """The ``plot`` extra: matplotlib below 3.10 (numpy >= 1.23) in the default profile."""
    if WITHOUT_MXNET:
        return ["matplotlib>=3.5"]
    return [f"matplotlib>=3.5,<3.10; {WITH_MXNET}", f"matplotlib>=3.5; {WITHOUT}"]


setup(
    name="qgface_plugin",
    version=VERSION,
    description="QGFace (quality-guided joint training for mixed-quality face recognition) for arcface_torch",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["qgface_plugin", "qgface_plugin.*", "recognition_configs"]),
    install_requires=install_requires(),
    extras_require={"test": ["pytest>=7"], "plot": plot_requires()},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
