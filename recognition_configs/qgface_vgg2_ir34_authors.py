"""The QGFace authors' profile: VGGFace2, IR-34, 12 epochs, SGD lr 0.2 × 0.1 at epochs 6 and 9, b = 0.2, K = 9131.

Values from the third-party "paper profile" and the authors' code defaults (the authors' own config
files are not public): AdaFace margin m = 0.4, h = 0.333, s = 64; contrastive scale 64, label
masking, symmetric anchors, rescale on; L view rescale U(0.1, 0.5) + JPEG 75, p = 0.2 crop/jitter/rotation.
Set `rec` to insightface's faces_vgg_112x112 and `num_image` to its image count (its `property` file gives
the classes).
"""
from easydict import EasyDict as edict

config = edict()
config.loss = "qgface"
config.network = "r34"
config.embedding_size = 512
config.fp16 = True
config.batch_size = 128
config.optimizer = "sgd"
config.lr = 0.2
config.momentum = 0.9
config.weight_decay = 5e-4
config.lr_schedule = "step"
config.lr_steps = [6, 9]
config.lr_gamma = 0.1
config.num_epoch = 12
config.warmup_epoch = 0
config.rec = "/train_tmp/faces_vgg_112x112"
config.num_classes = 9131
config.num_image = 3137807
config.verbose = 2000
config.val_targets = ["lfw", "cfp_fp", "agedb_30", "calfw", "cplfw"]
config.qgface_threshold = 0.2
config.qgface_queue_size = 9131
config.qgface_margin = "adaface"
config.qgface_stats_init = "zeros"
