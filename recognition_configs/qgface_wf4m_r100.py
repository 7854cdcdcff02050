"""QGFace (AdaFace margin for HQ rows) on WebFace4M, IResNet-100. Twins: qgface_/arcface_/cosface_wf4m_r100.py.

Hyper-parameters follow arcface_torch's configs/wf4m_r100.py; set `rec` to your WebFace4M folder.
"""
from easydict import EasyDict as edict

config = edict()
config.loss = "qgface"
config.network = "r100"
config.embedding_size = 512
config.margin_list = (1.0, 0.0, 0.4)
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
config.qgface_threshold = 0.2
config.qgface_queue_size = 65536
