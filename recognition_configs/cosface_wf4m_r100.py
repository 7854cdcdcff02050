"""CosFace baseline on WebFace4M, IResNet-100: arcface_torch's own WebFace recipe (margin (1, 0, 0.4))."""
from qgface_plugin.arcface.config import derive

config = derive("arcface_wf4m_r100", loss="cosface", margin_list=(1.0, 0.0, 0.4))
