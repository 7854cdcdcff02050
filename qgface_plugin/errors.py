"""The package's one error type for bad configuration or bad input."""

__all__ = ["QGFaceConfigError", "QGFaceInputError"]


class QGFaceConfigError(ValueError):
    """Bad configuration or input: the message names the key or value and what to do about it."""


class QGFaceInputError(ValueError):
    """Bad data reaching a component at run time (non-finite norms, out-of-range labels, bad shapes)."""
