"""Install metadata for qgface_plugin (``pip install -e .``; pinned set: requirements.txt)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "qgface_plugin" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="qgface_plugin",
    version=VERSION,
    description="QGFace (quality-guided joint training for mixed-quality face recognition) for arcface_torch",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["qgface_plugin", "qgface_plugin.*", "recognition_configs"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.21,<1.24",           # mxnet 1.9.1 needs np.bool (removed in numpy 1.24)
        "mxnet>=1.9.1,<2",
        "insightface>=0.7",
        "opencv-python-headless>=4.5,<4.12",  # 4.12+ requires numpy 2
        "pillow>=9.1",                 # Image.Resampling; the L view's resizes
        "scikit-image>=0.19,<0.25",     # 0.25+ requires numpy >= 1.24
        "easydict>=1.9",
        "onnx>=1.14",
        "onnxruntime>=1.16",
        "tensorboardX>=2.6",
    ],
    extras_require={"test": ["pytest>=7"], "plot": ["matplotlib>=3.5,<3.10"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
