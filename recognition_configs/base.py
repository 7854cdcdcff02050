"""Every training key, its default and its meaning. Job configs override what they need.

arcface_torch keys keep upstream's meaning (its ``configs/base.py``); QGFace keys are prefixed
``qgface_``. A job config must set: ``rec``, ``num_classes``, ``num_image``, ``num_epoch``,
``warmup_epoch`` (and usually ``network``, ``batch_size``, ``lr``, ``output``, ``val_targets``).
"""
from easydict import EasyDict as edict

config = edict()

# ---- what to train ---------------------------------------------------------------------------
config.loss = "qgface"                 # "qgface", or a single-view baseline: "arcface" | "cosface"
config.network = "r50"                 # any arcface_torch backbones.get_model name (r18, r50, mbf, ...)
config.embedding_size = 512
config.margin_list = (1.0, 0.5, 0.0)   # baselines: (1, m, 0) ArcFace, (1, 0, m) CosFace; s = 64
config.view_mode = "flip"              # single-view losses only (QGFace always trains H + L): "flip" (the H view:
                                       # flip only, upstream's) | "mixed" (the L view with probability view_lq_p, else
                                       # the H view: QGFace's degradation distribution, one view per image; tools/train.py)
config.view_lq_p = 0.5                 # view_mode="mixed": probability of the L view (0.5 = QGFace's share of L rows)

# ---- data ------------------------------------------------------------------------------------
config.rec = None                      # folder with train.rec/train.idx/property, or "synthetic"
config.num_classes = None              # identities in the training set (its 'property' file)
config.num_image = None                # images in the training set
config.val_targets = []                # .bin stems under `rec` (e.g. ["lfw", "cfp_fp", "agedb_30"])
config.num_workers = 2
config.dali = False                    # not supported with QGFace (DALI has no two-view hook)
config.dali_aug = False
config.seed = 2048

# ---- optimisation ----------------------------------------------------------------------------
config.optimizer = "sgd"               # "sgd" (momentum 0.9) | "adamw"
config.lr = 0.1
config.momentum = 0.9
config.weight_decay = 5e-4
config.batch_size = 128                # images per GPU (QGFace runs 2 views per image)
config.num_epoch = None
config.warmup_epoch = 0                # linear LR warm-up over these epochs (both schedules)
config.lr_schedule = "polynomial"      # "polynomial": upstream's linear decay to 0 | "step": × lr_gamma at lr_steps
config.lr_steps = []                   # "step" schedule: epochs at which the LR is multiplied by lr_gamma
config.lr_gamma = 0.1
config.fp16 = False                    # torch.amp fp16 with GradScaler (GPU only)
config.gradient_acc = 1                # only 1 is supported
config.clip_grad_norm = 5.0            # backbone gradient clipping (upstream hard-codes 5)
config.max_nonfinite_steps = 20        # a NaN/inf loss or gradient skips the step on every rank; stop after this many in a row
config.channels_last = False           # NHWC memory format for the backbone (faster convolutions on CPU)
config.tf32 = True                     # GPU: TF32 matrix products and convolutions (Ampere and newer; tools/train.py)
config.record_reader = "auto"          # train.rec reader: "mxnet" (upstream's MXFaceDataset) | "python" (no mxnet, same data) | "auto" (mxnet if it imports)
config.loader_uint8 = True             # loader workers ship uint8 images, normalised on the device (tools/train.py)

# ---- Partial FC ------------------------------------------------------------------------------
config.sample_rate = 1.0               # fraction of negative class centres per step
config.interclass_filtering_threshold = 0   # baselines only (upstream CombinedMarginLoss)

# ---- run control -----------------------------------------------------------------------------
config.output = None                   # default: work_dirs/<config name>
config.resume = False                  # True: continue from the newest checkpoint in `output` that every rank has
                                       # (at its exact step); "auto": the same if there is one, else start; a
                                       # torchrun restart (--max-restarts) always resumes as "auto"
config.resume_check_config = True      # refuse a checkpoint written with another config (False: continue anyway)
config.save_all_states = True          # write full-state checkpoints at each epoch end: checkpoint_gpu_<rank>.pt
config.save_every_steps = 0            # also every N steps: checkpoint_step<N>_gpu_<rank>.pt (0 = epoch ends only)
config.keep_checkpoints = 2            # step checkpoints kept (older ones, and all at an epoch end, are deleted)
config.stop_after_epoch = None         # end this run after that many epochs (time-boxed jobs; resume continues)
config.stop_after_steps = None         # end this run after that many steps, with a step checkpoint (resume continues)
config.verbose = 2000                  # run .bin verification every `verbose` steps (and at the end)
config.frequent = 10                   # progress line / tensorboard scalars every `frequent` steps

# ---- QGFace (arXiv 2312.17494); defaults follow the authors' code -----------------------------
config.qgface_threshold = 0.2          # b: a row is HQ when its normalised quality q̂ >= b; 0 = no partition
config.qgface_threshold_warmup_epochs = 0   # ramp b linearly from 0 over this many epochs (authors' joint_point)
config.qgface_lambda = 1.0             # λ, weight of the contrastive (LQ) loss
config.qgface_margin = "adaface"       # HQ margin: "adaface" (norm-adaptive) | "arcface" | "cosface"
config.qgface_m = None                 # its margin (None: AdaFace 0.4; ArcFace/CosFace from margin_list)
config.qgface_s = 64.0                 # scale of the classification logits
config.qgface_h = 0.333                # AdaFace h: concentration of the quality scaler
config.qgface_norm_momentum = 0.01     # EMA rate of the feature-norm mean/std
config.qgface_stats_init = "zeros"     # initial mean/std: "zeros" (authors) | "adaface" (20/100) | "first_batch"
config.qgface_hq_mode = "gate"         # keep LQ rows out of classification: "gate" (authors) | "subset"
config.qgface_queue_size = None        # K (None: min(num_classes, 65536))
config.qgface_contrastive_scale = 64.0 # s of the InfoNCE logits (1/temperature)
config.qgface_weight_method = "sgn"    # pair gate: "sgn" | "cos" | "linear"
config.qgface_weight_range = "half"    # "half" (only pairs below b) | "whole"
config.qgface_pair_quality = "low"     # quality of a view pair: "low" (min) | "mean" | "high"
config.qgface_mask = "label"           # queue entries at cosine 0: "label" (same class) | "own" (own 2 views)
config.qgface_symmetric = True         # both views act as anchors (authors' D2N)
config.qgface_detach_positive = False  # stop the gradient through the positive
config.qgface_rescale = True           # multiply L_con by ln(129)/ln(K+1)
config.qgface_proxy_correction = True  # correct queue entries by their class centres' drift
config.qgface_centre_dtype = "float32" # element type of the per-step K x D centre all-reduce: "float32" | "bfloat16" (half the bytes)
config.qgface_view_scale = (0.1, 0.5)  # L view: downscale factor range
config.qgface_view_jpeg_quality = 75   # L view: JPEG quality at the small size (None: off)
config.qgface_view_crop_p = 0.2        # L view: probability of a random resized crop
config.qgface_view_jitter_p = 0.2      # L view: probability of colour jitter
config.qgface_view_rotation_p = 0.2    # L view: probability of a rotation (±45°)

# ---- accepted for compatibility with arcface_torch configs (not used) ------------------------
config.wandb_key = None
config.suffix_run_name = None
config.using_wandb = False
config.wandb_entity = None
config.wandb_project = None
config.wandb_log_all = False
config.save_artifacts = False
config.wandb_resume = False
