"""A tiny stand-in backbone for evaluator tests, and its ONNX export."""
import warnings
from pathlib import Path

import torch


class TinyCNN(torch.nn.Module):
    """112x112 RGB -> ``dim`` raw features; seeded, so every instance is the same network."""

    def __init__(self, dim=16):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.fc = torch.nn.Linear(128, dim)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def export_tiny_onnx(path, net=None, input_name="input", output_name="embedding") -> Path:
    """Export ``net`` (default a :class:`TinyCNN`) with a dynamic batch axis (legacy exporter)."""
    net = (net or TinyCNN()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter warns; dynamo=False is asked for
        torch.onnx.export(net, torch.zeros(2, 3, 112, 112), str(path), dynamo=False, input_names=[input_name],
                          output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    return Path(path)


def verification_bins(base, bins_dir, name: str = "lfw"):
    """``bins_dir/<name>.bin``: the 40-pair verification set of a tiny synthetic training set made under
    ``base/synth`` (4 identities; 8 held-out ones for the pairs). Returns the ``.bin`` path."""
    import shutil
    from qgface_plugin.synthetic.training_set import make_dataset
    make_dataset(Path(base) / "synth", num_identities=4, images_per_identity=2, num_val_identities=8, val_pairs=40)
    Path(bins_dir).mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(Path(base) / "synth" / "synthetic_val.bin", Path(bins_dir) / f"{name}.bin"))
