"""ArcFace baseline (single view) on WebFace4M, IResNet-100: arcface_torch's configs/wf4m_r100.py with an
ArcFace margin (upstream's own WebFace recipe is CosFace: cosface_wf4m_r100.py).

Twins derive from this file (qgface_plugin.arcface.config.derive). Set `rec` to your WebFace4M folder.
"""
from easydict import EasyDict as edict

config = edict()
config.loss = "arcface"
config.network = "r100"
config.embedding_size = 512
config.margin_list = (1.0, 0.5, 0.0)
config.sample_rate = 1.0
config.fp16 = True
config.batch_size = 128
config.lr = 0.1
config.rec = "/train_tmp/WebFace4M"
config.num_classes = 205990
config.num_image = 4235242
config.num_epoch = 20
config.warmup_epoch = 0
config.verbose = 2000
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]
