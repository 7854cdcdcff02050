"""QGFace on WebFace4M, IResNet-100; twin of arcface_wf4m_r100 / cosface_wf4m_r100."""
from qgface_plugin.arcface.config import derive

config = derive("arcface_wf4m_r100", loss="qgface", qgface_threshold=0.2, qgface_queue_size=65536)
