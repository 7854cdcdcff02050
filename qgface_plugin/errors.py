"""The package's three base error types, one per way a run can fail for its user; errors about the
configuration, the data or a diverging run are one of them or a subclass (a broken invariant or a failing
library call keeps its built-in type).

- :class:`QGFaceConfigError` — bad configuration, mostly found before any work starts (tools exit 2);
- :class:`QGFaceInputError` — bad data met at run time (tools exit 2);
- :class:`QGFaceNonFiniteError` — training diverged (tools exit 1).

Subclasses live beside the code that raises them, for callers that need to tell cases apart:
``RecordIOError`` (a :class:`QGFaceInputError`: a malformed record set, :mod:`qgface_plugin.formats.recordio`)
and, for the arcface_torch checkout and its imports, ``UpstreamNotFoundError``, ``UpstreamAPIError``,
``UpstreamConflictError`` and ``UpstreamDependencyError`` (subclasses of :class:`QGFaceConfigError`, in
:mod:`qgface_plugin.arcface`).
"""

__all__ = ["QGFaceConfigError", "QGFaceInputError", "QGFaceNonFiniteError"]


class QGFaceConfigError(ValueError):
    """Bad configuration: a config key or value, a flag, a missing or wrong arcface_torch checkout; the
    message names the key or value and what to do about it."""


class QGFaceInputError(ValueError):
    """Bad data reaching a component at run time (a corrupt record, out-of-range labels, non-finite
    norms, bad shapes); the message names the file or key and what to do about it."""


class QGFaceNonFiniteError(FloatingPointError):
    """Training stopped: too many consecutive steps with a NaN/inf loss or gradient (config
    ``max_nonfinite_steps``); raised on every rank at the same step."""
