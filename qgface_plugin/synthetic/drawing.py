"""Drawing primitives of the synthetic faces: :class:`Canvas` draws in the 112x112 face frame through a
similarity transform, anti-aliased, with sub-pixel coordinates (OpenCV fixed point); cached point sets
(elliptic arcs, parabolas) and the normalised pixel grid. numpy + OpenCV.
"""
import copy
import functools
import math

import cv2
import numpy as np

__all__ = ["Canvas", "AA", "ellipse_pts", "curve", "grid"]

_SHIFT = 4                       # cv2 fractional bits for sub-pixel drawing
_ONE = 1 << _SHIFT
AA = cv2.LINE_AA


class Canvas:
    """Draws in the 112x112 face frame through a similarity transform, anti-aliased."""

    def __init__(self, img, scale, angle_deg, tx, ty, centre=(56.0, 56.0)):
        self.img = img
        self.s = scale
        self.angle = angle_deg
        a = math.radians(angle_deg)
        self.c, self.sn = scale * math.cos(a), scale * math.sin(a)
        self.cx, self.cy = centre
        self.out_c = (centre[0] * img.shape[1] / 112.0 + tx, centre[1] * img.shape[0] / 112.0 + ty)
        self.k = img.shape[0] / 112.0

    def pt(self, x, y):
        """One point -> integer (x, y) in fixed point."""
        dx, dy = x - self.cx, y - self.cy
        return (int(round(((self.c * dx - self.sn * dy) * self.k + self.out_c[0]) * _ONE)),
                int(round(((self.sn * dx + self.c * dy) * self.k + self.out_c[1]) * _ONE)))

    def pts(self, p):
        p = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        dx, dy = p[:, 0] - self.cx, p[:, 1] - self.cy
        x = (self.c * dx - self.sn * dy) * self.k + self.out_c[0]
        y = (self.sn * dx + self.c * dy) * self.k + self.out_c[1]
        return np.round(np.stack([x, y], 1) * _ONE).astype(np.int32)

    def on(self, img):
        """The same transform drawing into another image of the same size."""
        other = copy.copy(self)
        other.img = img
        return other

    def _len(self, v):
        return max(int(round(v * self.s * self.k * _ONE)), 0)

    def _w(self, t):
        return max(int(round(t * self.s * self.k)), 1)

    def ellipse(self, centre, axes, angle, colour, thickness=-1, a0=0, a1=360):
        cv2.ellipse(self.img, self.pt(*centre), (self._len(axes[0]), self._len(axes[1])),
                    angle + self.angle, a0, a1, colour,
                    -1 if thickness < 0 else self._w(thickness), AA, _SHIFT)

    def circle(self, centre, r, colour, thickness=-1):
        cv2.circle(self.img, self.pt(*centre), self._len(r), colour,
                   -1 if thickness < 0 else self._w(thickness), AA, _SHIFT)

    def poly(self, p, colour, thickness=-1, closed=False):
        q = self.pts(p)
        if thickness < 0:
            cv2.fillPoly(self.img, [q], colour, AA, _SHIFT)
        else:
            cv2.polylines(self.img, [q], closed, colour, self._w(thickness), AA, _SHIFT)

    def line(self, p0, p1, colour, thickness):
        cv2.line(self.img, self.pt(*p0), self.pt(*p1), colour,
                 self._w(thickness), AA, _SHIFT)


@functools.lru_cache(maxsize=64)
def _arc(a0, a1, n):
    t = np.radians(np.linspace(a0, a1, n))
    c, sn = np.cos(t), np.sin(t)
    c.flags.writeable = False
    sn.flags.writeable = False
    return c, sn


def ellipse_pts(cx, cy, ax, ay, a0, a1, n=24):
    c, sn = _arc(a0, a1, n)
    out = np.empty((n, 2))
    out[:, 0] = c * ax + cx
    out[:, 1] = sn * ay + cy
    return out




@functools.lru_cache(maxsize=16)
def _parabola(n):
    t = np.linspace(0.0, 1.0, n)
    sag = 1 - (2 * t - 1) ** 2
    t.flags.writeable = False
    sag.flags.writeable = False
    return t, sag


def curve(x0, x1, y, bend, n=9):
    """A parabola from (x0, y) to (x1, y) that sags by ``bend`` in the middle (down = +)."""
    t, sag = _parabola(n)
    out = np.empty((n, 2))
    out[:, 0] = t * (x1 - x0) + x0
    out[:, 1] = sag * bend + y
    return out


@functools.lru_cache(maxsize=8)
def grid(h, w):
    """Normalised coordinates (x / h, y / h), float32, cached per size (read-only)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / np.float32(max(h, 1))
    xx.flags.writeable = False
    yy.flags.writeable = False
    return xx, yy
