#!/usr/bin/env python
"""Train QGFace (config.loss = "qgface") or an ArcFace/CosFace baseline on arcface_torch's parts.

    python tools/train.py recognition_configs/qgface_demo_cpu.py            # one process (CPU or GPU)
    torchrun --nproc_per_node=8 tools/train.py recognition_configs/qgface_ms1mv2_r100.py
    python tools/train.py qgface_demo_cpu rec=/data/faces num_classes=1000 --output out/   # overrides

arcface_torch is found through --arcface-root, $ARCFACE_TORCH_ROOT or third_party/arcface_torch
(tools/fetch_arcface_torch.py puts it there).
"""
import sys

from qgface_plugin.arcface.training import main

if __name__ == "__main__":
    sys.exit(main())
