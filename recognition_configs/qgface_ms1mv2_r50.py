"""QGFace on MS1MV2, IResNet-50; twin of arcface_ms1mv2_r50."""
from qgface_plugin.arcface.config import derive

config = derive("arcface_ms1mv2_r50", loss="qgface", qgface_threshold=0.2, qgface_queue_size=65536)
