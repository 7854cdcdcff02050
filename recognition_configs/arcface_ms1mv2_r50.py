"""ArcFace baseline on MS1MV2, IResNet-50 (arcface_torch's configs/ms1mv2_r50.py); twin: qgface_ms1mv2_r50."""
from qgface_plugin.arcface.config import derive

config = derive("arcface_ms1mv2_r100", network="r50")
