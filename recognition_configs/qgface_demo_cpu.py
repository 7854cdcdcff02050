"""Tiny QGFace run on the synthetic mixed-quality set of tools/make_synthetic_data.py (CPU-sized).

    python tools/make_synthetic_data.py --output work_dirs/synthetic_data
    python tools/train.py qgface_demo_cpu rec=work_dirs/synthetic_data
"""
from easydict import EasyDict as edict

config = edict()
config.loss = "qgface"
config.network = "mbf"
config.embedding_size = 128
config.rec = "work_dirs/synthetic_data"
config.num_classes = 100
config.num_image = 2000
config.val_targets = ["synthetic_val_hq", "synthetic_val_lq"]
config.batch_size = 32
config.num_epoch = 3
config.warmup_epoch = 0
config.lr = 0.1
config.num_workers = 2
config.channels_last = True
config.verbose = 10 ** 9              # verify at the end only
config.frequent = 10
config.qgface_stats_init = "first_batch"  # a short run cannot wait ~100 steps for the EMA to settle
# In a 10-minute run the feature norm has not yet learnt to separate the qualities (it does over a real
# training run), so with the authors' b = 0.2 no row would fall below it and the LQ branch would stay
# idle; b = 0.4 puts roughly the lowest-norm quarter of the rows into it from the start.
config.qgface_threshold = 0.4
config.qgface_queue_size = 1024
config.output = "work_dirs/qgface_demo_cpu"
