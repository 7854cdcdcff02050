"""ArcFace baseline (single view) on MS1MV2 (faces_emore), IResNet-100: arcface_torch's configs/ms1mv2_r100.py.

Twins derive from this file (qgface_plugin.arcface.config.derive), so they differ only in what they change.
Set `rec` to your faces_emore folder.
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
config.rec = "/train_tmp/faces_emore"
config.num_classes = 85742
config.num_image = 5822653
config.num_epoch = 20
config.warmup_epoch = 0
config.verbose = 2000
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]
