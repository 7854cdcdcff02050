"""Small tensor helpers shared by the components."""
import torch

__all__ = ["at_least_fp32"]


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or float64 if it already is: the maths never runs in fp16/bf16."""
    return t.to(torch.promote_types(t.dtype, torch.float32))
