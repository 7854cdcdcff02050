"""ArcFace baseline (single view) on WebFace4M, IResNet-100: arcface_torch's configs/wf4m_r100.py with an
ArcFace margin (upstream's own WebFace recipe is CosFace: cosface_wf4m_r100.py). The MS1MV2 recipe with
WebFace4M's data; twins derive from this file. Set `rec` to your WebFace4M folder.
"""
from qgface_plugin.arcface.config import derive

config = derive("arcface_ms1mv2_r100", rec="/train_tmp/WebFace4M", num_classes=205990, num_image=4235242)
