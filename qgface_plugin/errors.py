"""The package's error types: bad configuration, bad input at run time, a run that diverged."""

__all__ = ["QGFaceConfigError", "QGFaceInputError", "QGFaceNonFiniteError"]


class QGFaceConfigError(ValueError):
    """Bad configuration or input: the message names the key or value and what to do about it."""


class QGFaceInputError(ValueError):
    """Bad data reaching a component at run time (non-finite norms, out-of-range labels, bad shapes)."""


class QGFaceNonFiniteError(FloatingPointError):
    """Training stopped: too many consecutive steps with a NaN/inf loss or gradient (config
    ``max_nonfinite_steps``); raised on every rank at the same step."""
