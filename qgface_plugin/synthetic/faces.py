"""A small synthetic, mixed-quality, face-like data set in arcface_torch's layout.

The faces are cartoons drawn with OpenCV primitives, but they are built the way
a face-recognition data set is: every *identity* is a fixed set of parameters
(face shape, skin / hair / eye colours, hair style and hairline, eye spacing,
brows, nose, mouth, marks such as a mole, freckles, glasses or a beard), and
every *image* of that identity is rendered with its own nuisance (rotation,
translation, scale, slight yaw, lighting gradient, brightness / contrast /
colour cast, expression, clothing, background clutter, sensor noise). A part of
the images is then degraded (downscale and back, blur, noise, darkening, colour
loss, JPEG),
so the image quality varies and a feature-norm quality signal has something to
pick up.

The geometry follows the ArcFace 112x112 alignment template: eyes near
(38, 52) and (74, 52), nose tip near (56, 72), mouth corners near y = 92.

Public API (numpy + OpenCV; mxnet is imported only by the functions that write
or read ``.rec`` files):

* :func:`draw_identity` -- ``rng -> dict`` of identity parameters.
* :func:`render_face` -- ``(identity, rng, size=112) -> uint8 RGB [size, size, 3]``.
* :func:`degrade_quality` -- ``(img, rng, level) -> uint8 RGB``, ``level`` in [0, 1].
* :func:`encode_jpeg` -- RGB array -> JPEG bytes (encoded from BGR, so decoders that
  return RGB, such as ``mx.image.imdecode``, give the colours back unchanged).
* :func:`write_train_rec` -- an insightface "header0" ``train.rec`` / ``train.idx`` /
  ``property`` from ``(rgb_image, label)`` pairs grouped by label.
* :func:`write_verification_bin` -- an insightface verification ``.bin``.
* :func:`make_dataset` -- the whole data set (train rec, three ``.bin`` sets of held-out
  identities, a per-image quality list and a ``dataset.json`` summary).
* :func:`read_rec_images` / :func:`contact_sheet` -- read the images back; a preview grid.

Everything is deterministic for a seed: every identity and every image has its
own random stream keyed by ``(seed, purpose, index...)``, so, for example, the
first 100 identities of a 1,000-identity set are the 100 identities of a
100-identity set with the same seed.
"""

import copy
import functools
import json
import math
import numbers
import os
import pickle
import time

import cv2
import numpy as np

from ..errors import QGFaceConfigError

__all__ = [
    "draw_identity", "render_face", "degrade_quality", "encode_jpeg",
    "write_train_rec", "write_verification_bin", "make_dataset",
    "read_rec_images", "contact_sheet",
]

# ArcFace 112x112 five-point template (x, y): left eye, right eye, nose, mouth corners.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)

_SHIFT = 4                       # cv2 fractional bits for sub-pixel drawing
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA
_JPEG_TRAIN_QUALITY = 95
_BIN_PICKLE_PROTOCOL = 4         # readable by every Python 3 that insightface supports

# Purposes of the keyed random streams (part of the on-disk determinism contract).
_STREAM_TRAIN_ID, _STREAM_TRAIN_IMG, _STREAM_TRAIN_SPLIT = 1, 2, 3
_STREAM_VAL_ID, _STREAM_VAL_PAIRS, _STREAM_VAL_IMG = 11, 12, 13

_HAIR_STYLES = ("short", "fringe", "side_part", "receding", "bald", "long", "curly", "buzz")
_HAIR_STYLE_P = (0.2, 0.14, 0.16, 0.1, 0.06, 0.18, 0.08, 0.08)
_BEARD_STYLES = ("none", "moustache", "goatee", "full", "stubble")
_BEARD_STYLE_P = (0.6, 0.1, 0.1, 0.1, 0.1)


# --------------------------------------------------------------------------- #
# identities
# --------------------------------------------------------------------------- #
def _hsv_to_rgb(h, s, v):
    """h in degrees, s and v in [0, 1] -> RGB tuple of floats 0..255."""
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = v - c
    return tuple(float(255.0 * (t + m)) for t in (r, g, b))


def _skin_colour(rng):
    # Mostly natural skin tones (hue 8-35 deg, wide range of lightness), sometimes a
    # stylised tint (the identity space is a cartoon's, richer than real skin).
    if rng.random() < 0.85:
        return _hsv_to_rgb(rng.uniform(8, 35), rng.uniform(0.2, 0.65), rng.uniform(0.35, 0.97))
    return _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.15, 0.5), rng.uniform(0.5, 0.95))


def _hair_colour(rng):
    kind = rng.choice(6, p=[0.3, 0.25, 0.15, 0.08, 0.12, 0.1])
    if kind == 0:      # black / near black
        return _hsv_to_rgb(rng.uniform(0, 40), rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.2))
    if kind == 1:      # brown
        return _hsv_to_rgb(rng.uniform(15, 35), rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.5))
    if kind == 2:      # blond
        return _hsv_to_rgb(rng.uniform(35, 52), rng.uniform(0.3, 0.7), rng.uniform(0.6, 0.95))
    if kind == 3:      # red / auburn
        return _hsv_to_rgb(rng.uniform(5, 22), rng.uniform(0.6, 0.9), rng.uniform(0.4, 0.8))
    if kind == 4:      # grey / white
        g = rng.uniform(0.45, 0.95)
        return _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.08), g)
    return _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.9))  # dyed


def _iris_colour(rng):
    kind = rng.choice(5, p=[0.45, 0.2, 0.12, 0.13, 0.1])
    hue, sat, val = [(25, 0.7, 0.3), (210, 0.55, 0.65), (110, 0.5, 0.5), (200, 0.12, 0.55),
                     (40, 0.6, 0.45)][kind]
    return _hsv_to_rgb(hue + rng.uniform(-12, 12), float(np.clip(sat + rng.uniform(-0.15, 0.15), 0, 1)),
                       float(np.clip(val + rng.uniform(-0.15, 0.15), 0.05, 1)))


def _shade(colour, factor):
    return tuple(min(max(float(c) * factor, 0.0), 255.0) for c in colour)


def draw_identity(rng):
    """Draw the parameters of one synthetic identity.

    Args:
        rng: ``np.random.Generator`` (or an int seed / None for ``np.random.default_rng``).

    Returns:
        A dict of plain Python values (JSON-serialisable): colours are RGB lists
        of three floats in [0, 255], lengths are pixels in the 112x112 frame
        (eye centres at ``56 -+ eye_dx, eye_y``, nose tip at ``nose_len``, mouth
        at ``mouth_y``; on average the ArcFace template, ``ARCFACE_TEMPLATE``).
        Keys: ``face_w``, ``face_h``, ``face_cy``, ``jaw`` (0 oval .. 1 square),
        ``chin`` (chin point), ``skin``, ``blush``, ``ear_size``, ``ear_out``,
        ``hair_style``, ``hair_colour``, ``hairline`` (y), ``hair_volume``,
        ``hair_part`` (-1..1), ``eye_dx`` (half spacing), ``eye_y``, ``eye_w``,
        ``eye_h``, ``iris``, ``iris_r``, ``eye_tilt``, ``brow_colour``,
        ``brow_thick``, ``brow_angle``, ``brow_arch``, ``brow_gap``, ``brow_len``,
        ``nose_len`` (tip y), ``nose_w``, ``nose_bridge``, ``mouth_w``,
        ``mouth_y``, ``lip_thick``, ``lip_colour``, ``smile``, ``mole``
        (None or ``[x, y, r]``), ``freckles`` (list of ``[x, y]``), ``glasses``
        (None or dict), ``beard``, ``beard_colour``, ``scar`` (None or
        ``[x0, y0, x1, y1]``), ``background``, ``bg_pattern``.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    u = rng.uniform
    skin = _skin_colour(rng)
    hair = _hair_colour(rng)
    style = str(rng.choice(_HAIR_STYLES, p=_HAIR_STYLE_P))
    eye_dx = u(15.0, 20.0)
    ident = {
        "face_w": u(31.0, 42.0), "face_h": u(47.0, 58.0), "face_cy": u(57.0, 65.0),
        "jaw": u(0.0, 1.0), "chin": u(-0.3, 1.0),
        "skin": skin, "blush": u(0.0, 0.35),
        "ear_size": u(7.0, 12.0), "ear_out": u(0.0, 4.0),
        "hair_style": style, "hair_colour": hair, "hairline": u(14.0, 30.0),
        "hair_volume": u(2.0, 10.0), "hair_part": u(-1.0, 1.0),
        "eye_dx": eye_dx, "eye_y": u(49.0, 55.0), "eye_w": u(6.0, 9.5), "eye_h": u(2.6, 4.8),
        "iris": _iris_colour(rng), "iris_r": u(2.2, 3.6), "eye_tilt": u(-10.0, 10.0),
        "brow_colour": _shade(hair if rng.random() < 0.8 else _hair_colour(rng), u(0.55, 0.9)),
        "brow_thick": u(1.3, 4.2), "brow_angle": u(-14.0, 14.0), "brow_arch": u(-1.0, 3.5),
        "brow_gap": u(5.0, 10.0), "brow_len": u(0.9, 1.35),
        "nose_len": u(66.0, 77.0), "nose_w": u(4.0, 9.0), "nose_bridge": u(0.0, 1.0),
        "mouth_w": u(10.0, 18.0), "mouth_y": u(88.0, 95.0), "lip_thick": u(1.5, 5.0),
        "lip_colour": _hsv_to_rgb(u(340.0, 375.0), u(0.3, 0.75), u(0.35, 0.85)),
        "smile": u(-2.0, 4.0),
        "mole": None, "freckles": [], "glasses": None, "scar": None,
        "beard": str(rng.choice(_BEARD_STYLES, p=_BEARD_STYLE_P)),
        "background": _hsv_to_rgb(u(0, 360), u(0.05, 0.6), u(0.25, 0.95)),
        "bg_pattern": int(rng.integers(0, 4)),
    }
    ident["beard_colour"] = _shade(hair, u(0.6, 1.0))
    if rng.random() < 0.45:
        side = 1 if rng.random() < 0.5 else -1
        ident["mole"] = [56.0 + side * u(6.0, 28.0), u(58.0, 100.0), u(1.2, 2.6)]
    if rng.random() < 0.18:
        cx, cy = 56.0 + u(-4, 4), u(64.0, 74.0)
        ident["freckles"] = [[float(cx + s * u(10, 26)), float(cy + u(-6, 6))]
                             for s in (-1, 1) for _ in range(int(rng.integers(4, 9)))]
    if rng.random() < 0.25:
        ident["glasses"] = {
            "shape": str(rng.choice(["round", "rect"])),
            "colour": _hsv_to_rgb(u(0, 360), u(0.0, 0.8), u(0.05, 0.7)),
            "thick": float(u(1.0, 2.6)), "size": float(u(1.05, 1.4)),
            "tint": float(u(0.0, 0.5)) if rng.random() < 0.25 else 0.0,
        }
    if rng.random() < 0.12:
        x0, y0 = 56.0 + u(-26, 26), u(40.0, 95.0)
        ang, ln = u(0, math.pi), u(6.0, 14.0)
        ident["scar"] = [x0, y0, x0 + ln * math.cos(ang), y0 + ln * math.sin(ang)]
    return _plain(ident)


def _plain(obj):
    """Numpy scalars -> Python scalars, tuples -> lists (JSON-friendly, stable)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# --------------------------------------------------------------------------- #
# rendering
# --------------------------------------------------------------------------- #
class _Canvas:
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
                    -1 if thickness < 0 else self._w(thickness), _AA, _SHIFT)

    def circle(self, centre, r, colour, thickness=-1):
        cv2.circle(self.img, self.pt(*centre), self._len(r), colour,
                   -1 if thickness < 0 else self._w(thickness), _AA, _SHIFT)

    def poly(self, p, colour, thickness=-1, closed=False):
        q = self.pts(p)
        if thickness < 0:
            cv2.fillPoly(self.img, [q], colour, _AA, _SHIFT)
        else:
            cv2.polylines(self.img, [q], closed, colour, self._w(thickness), _AA, _SHIFT)

    def line(self, p0, p1, colour, thickness):
        cv2.line(self.img, self.pt(*p0), self.pt(*p1), colour,
                 self._w(thickness), _AA, _SHIFT)


@functools.lru_cache(maxsize=64)
def _arc(a0, a1, n):
    t = np.radians(np.linspace(a0, a1, n))
    c, sn = np.cos(t), np.sin(t)
    c.flags.writeable = False
    sn.flags.writeable = False
    return c, sn


def _ellipse_pts(cx, cy, ax, ay, a0, a1, n=24):
    c, sn = _arc(a0, a1, n)
    out = np.empty((n, 2))
    out[:, 0] = c * ax + cx
    out[:, 1] = sn * ay + cy
    return out


def _face_outline(idn):
    """Closed outline of the face: an ellipse blended toward a rounded square jaw, with a chin."""
    cx, cy, w, h = 56.0, idn["face_cy"], idn["face_w"], idn["face_h"]
    t = np.radians(np.linspace(0, 360, 72, endpoint=False))
    x, y = np.cos(t), np.sin(t)
    # squareness on the lower half only (superellipse exponent from 2 to ~3.2)
    p = 2.0 + 1.2 * idn["jaw"]
    lower = y > 0
    xs = np.sign(x) * np.abs(x) ** (2.0 / p)
    ys = np.sign(y) * np.abs(y) ** (2.0 / p)
    x = np.where(lower, xs, x)
    y = np.where(lower, ys, y)
    # chin: pull the bottom centre down (pointed) or flatten it
    y = y + 0.06 * idn["chin"] * np.exp(-((t - math.pi / 2) / 0.35) ** 2)
    return np.stack([cx + w * x, cy + h * y], 1)


@functools.lru_cache(maxsize=16)
def _parabola(n):
    t = np.linspace(0.0, 1.0, n)
    sag = 1 - (2 * t - 1) ** 2
    t.flags.writeable = False
    sag.flags.writeable = False
    return t, sag


def _curve(x0, x1, y, bend, n=9):
    """A parabola from (x0, y) to (x1, y) that sags by ``bend`` in the middle (down = +)."""
    t, sag = _parabola(n)
    out = np.empty((n, 2))
    out[:, 0] = t * (x1 - x0) + x0
    out[:, 1] = sag * bend + y
    return out


@functools.lru_cache(maxsize=8)
def _grid(h, w):
    """Normalised coordinates (x / h, y / h), float32, cached per size (read-only)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / np.float32(max(h, 1))
    xx.flags.writeable = False
    yy.flags.writeable = False
    return xx, yy


def _draw_background(img, idn, rng):
    """Background: half of the images use the identity's colour and pattern (a weak cue,
    like a person photographed in the same places), the rest a random colour and
    pattern; plus a gradient and a few random clutter shapes."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        base = np.array(idn["background"], np.float32) * rng.uniform(0.8, 1.15)
        pat = idn["bg_pattern"]
    else:
        base = np.array(_hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95)),
                        np.float32)
        pat = int(rng.integers(0, 4))
    base += rng.normal(0, 10, 3).astype(np.float32)
    xx, yy = _grid(h, w)
    ang = rng.uniform(0, 2 * math.pi)
    grad = (np.float32(math.cos(ang)) * xx + np.float32(math.sin(ang)) * yy - 0.5) * np.float32(rng.uniform(0, 60))
    img[:] = np.clip(base[None, None, :] + grad[..., None], 0, 255).astype(np.uint8)
    k = h / 112.0
    col = tuple(float(c) for c in np.clip(base * rng.uniform(0.7, 1.3) + rng.normal(0, 12, 3), 0, 255))
    if pat == 1:
        for x in np.arange(rng.uniform(0, 14), w, 14 * k):
            cv2.line(img, (int(x), 0), (int(x), h), col, max(int(2 * k), 1), _AA)
    elif pat == 2:
        for y in np.arange(rng.uniform(0, 16), h, 16 * k):
            cv2.line(img, (0, int(y)), (w, int(y)), col, max(int(3 * k), 1), _AA)
    elif pat == 3:
        for _ in range(10):
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                       int(rng.uniform(3, 9) * k), col, -1, _AA)
    for _ in range(int(rng.integers(0, 6))):
        c = tuple(float(v) for v in rng.uniform(0, 255, 3))
        p0 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        if rng.random() < 0.5:
            p1 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            cv2.line(img, p0, p1, c, max(int(rng.uniform(1, 4) * k), 1), _AA)
        else:
            cv2.rectangle(img, p0, (p0[0] + int(rng.uniform(4, 20) * k), p0[1] + int(rng.uniform(4, 20) * k)),
                          c, -1, _AA)


def _draw_hair_back(cv, idn, jit):
    style, col, vol = idn["hair_style"], tuple(idn["hair_colour"]), idn["hair_volume"]
    cy, w, h = idn["face_cy"], idn["face_w"], idn["face_h"]
    if style == "long":
        dark = _shade(col, 0.85)
        cv.ellipse((56, cy - 6), (w + vol + 2, h + 8), 0, dark, a0=180, a1=360)
        cv.poly([[56 - w - vol - 2, cy - 6], [56 + w + vol + 2, cy - 6],
                 [56 + w + vol + 6 + jit, 118], [56 - w - vol - 6 + jit, 118]], dark)


def _draw_hair_top(cv, idn, jit):
    style, col, vol, line = idn["hair_style"], tuple(idn["hair_colour"]), idn["hair_volume"], idn["hairline"]
    cy, w, h, part = idn["face_cy"], idn["face_w"], idn["face_h"], idn["hair_part"]
    if style == "bald":
        # a fringe of hair at the sides only
        for s in (-1, 1):
            cv.ellipse((56 + s * (w - 2), cy - 8), (5, 12), s * 10, col)
        return
    top = cy - h
    if style == "buzz":
        vol = 1.0
    outer = _ellipse_pts(56, cy - 2, w + vol * 0.6 + 1, h + vol, 180, 360, 25)
    # hairline curve, right to left (closing the polygon under the outer arc)
    xs = np.linspace(56 + w + 1, 56 - w - 1, 25)
    m = (xs - 56) / (w + 1)
    if style == "fringe":
        hl = line + 8 + 3 * np.cos(m * 9 + jit) * 0.5 + 2 * m ** 2
    elif style == "side_part":
        hl = line + 2 + 6 * np.clip(part * m, 0, None) + 6 * m ** 2
    elif style == "receding":
        hl = line - 2 + 7 * (1 - np.abs(np.abs(m) - 0.55) / 0.55).clip(0) + 14 * m ** 2 - 2
    elif style == "curly":
        hl = line + 2 + 2.5 * np.abs(np.sin(m * 7)) + 6 * m ** 2
    else:  # short, long, buzz
        hl = line + 9 * m ** 2
    # sides come down past the temples
    hl = np.where(np.abs(m) > 0.82, np.maximum(hl, cy - 14 + 10 * (np.abs(m) - 0.82) / 0.18), hl)
    poly = np.concatenate([outer, np.stack([xs, hl], 1)], 0)
    cv.poly(poly, col)
    if style == "curly":
        for x, y in outer[::2]:
            cv.circle((x, y + 1), 4.0, col)
    if style == "side_part" and abs(part) > 0.15:
        px = 56 + part * w * 0.45
        cv.line((px, top - vol * 0.5), (px + 2 * part, line + 4), _shade(col, 0.6), 1.2)
    if style in ("short", "long", "side_part") and vol > 5:
        shine = _shade(col, 1.35) if sum(col) < 600 else _shade(col, 0.8)
        cv.ellipse((56 - 8 * part, top + 6), (w * 0.45, 3), -8 * part, shine, 1.4, 200, 340)


def _draw_eye(cv, x, y, idn, side, openness, look):
    ew, eh = idn["eye_w"], idn["eye_h"] * openness
    tilt = idn["eye_tilt"] * side
    skin = tuple(idn["skin"])
    cv.ellipse((x, y + 1.2), (ew + 1.5, idn["eye_h"] + 1.5), tilt, _shade(skin, 0.88))  # socket shade
    if eh > 0.8:
        cv.ellipse((x, y), (ew, eh), tilt, (242, 240, 235))
        r = min(idn["iris_r"], eh + 0.6)
        ix = x + look
        cv.circle((ix, y), r, tuple(idn["iris"]))
        cv.circle((ix, y), r * 0.45, (15, 12, 12))
        cv.circle((ix + 0.8, y - 0.8), max(r * 0.18, 0.4), (250, 250, 250))
        # re-cut the iris to the eye opening: paint the skin above and below the lids
        for sgn in (-1, 1):
            lid = _ellipse_pts(x, y, ew, eh, 180 if sgn < 0 else 0, 360 if sgn < 0 else 180, 13)
            cap = _ellipse_pts(x, y, ew + 0.2, eh + 6, 180 if sgn < 0 else 0, 360 if sgn < 0 else 180, 13)
            cv.poly(np.concatenate([lid, cap[::-1]], 0), _shade(skin, 0.88))
    cv.ellipse((x, y), (ew, max(eh, 0.6)), tilt, (30, 22, 20), 1.1, 180, 360)  # upper lid line


def _draw_glasses(cv, idn, ex, ey):
    g = idn["glasses"]
    col, th, sz = tuple(g["colour"]), g["thick"], g["size"]
    rw, rh = idn["eye_w"] * sz + 3, idn["eye_w"] * sz * 0.75 + 2
    for x in ex:
        if g["tint"] > 0:
            layer = cv.img.copy()
            sub = cv.on(layer)
            if g["shape"] == "round":
                sub.ellipse((x, ey + 1), (rw, rh), 0, (20, 20, 25))
            else:
                sub.poly([[x - rw, ey - rh + 1], [x + rw, ey - rh + 1], [x + rw, ey + rh + 1],
                          [x - rw, ey + rh + 1]], (20, 20, 25))
            cv2.addWeighted(layer, g["tint"], cv.img, 1 - g["tint"], 0, dst=cv.img)
        if g["shape"] == "round":
            cv.ellipse((x, ey + 1), (rw, rh), 0, col, th)
        else:
            cv.poly([[x - rw, ey - rh + 1], [x + rw, ey - rh + 1], [x + rw, ey + rh + 1],
                     [x - rw, ey + rh + 1]], col, th, closed=True)
    cv.poly(_curve(ex[0] + rw, ex[1] - rw, ey - 1, -2, 5), col, th)
    for s, x in ((-1, ex[0]), (1, ex[1])):
        cv.line((x + s * rw, ey - 1), (56 + s * (idn["face_w"] + 1), ey - 3), col, th)


def _beard_region(idn, mx_, my, mw, lt):
    """Polygon of a full beard: the face outline below the cheeks, closed by an edge that
    runs from the cheeks down around the mouth."""
    cy, w, ey = idn["face_cy"], idn["face_w"], idn["eye_y"]
    outline = _face_outline(idn)
    top_y = ey + 14
    lower = outline[outline[:, 1] > top_y]
    lower = lower[np.argsort(np.arctan2(lower[:, 1] - cy, lower[:, 0] - 56))]   # right -> bottom -> left
    edge = np.array([[56 - w + 1, top_y], [mx_ - mw - 3, my - 4], [mx_ - mw * 0.6, my + lt * 1.3 + 3],
                     [mx_ + mw * 0.6, my + lt * 1.3 + 3], [mx_ + mw + 3, my - 4], [56 + w - 1, top_y]])
    return np.concatenate([lower, edge], 0)


def _draw_beard(cv, idn, mx_, my, mw, lt):
    style, col = idn["beard"], tuple(idn["beard_colour"])
    if style == "none":
        return
    if style == "stubble":
        layer = cv.img.copy()
        cv.on(layer).poly(_beard_region(idn, mx_, my, mw, lt), col)
        cv2.addWeighted(layer, 0.35, cv.img, 0.65, 0, dst=cv.img)
        return
    if style == "full":
        cv.poly(_beard_region(idn, mx_, my, mw, lt), col)
    if style in ("moustache", "full"):
        cv.poly(np.concatenate([_curve(mx_ - mw - 2, mx_ + mw + 2, my - 2, -2.5),
                                _curve(mx_ + mw + 1, mx_ - mw - 1, my - 7, -1.5)], 0), col)
    if style == "goatee":
        cv.ellipse((mx_, my + lt + 6), (mw * 0.55, 6), 0, col)


def render_face(identity, rng, size=112):
    """Render one image of ``identity`` with per-image nuisance.

    The face is frontal and roughly ArcFace-aligned (eyes near (38, 52) and
    (74, 52), nose tip near (56, 72), mouth near y = 92 in the 112x112 frame),
    then moved by a random similarity transform (rotation within +-8 deg,
    translation within +-4 px, scale within +-6 %) and a small yaw (features
    shift sideways inside the face outline). Per image: lighting gradient,
    brightness, contrast and colour cast; expression (mouth curvature, eye
    openness, brow raise, gaze); clothing colour; background tint, clutter and
    sensor noise.

    Args:
        identity: a dict from :func:`draw_identity`.
        rng: ``np.random.Generator`` (or an int seed / None).
        size: output side in pixels (the 112 frame is scaled to it).

    Returns:
        ``np.ndarray`` uint8, RGB, ``[size, size, 3]``.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    size = _check_int("size", size, 16)
    idn = identity
    img = np.empty((size, size, 3), np.uint8)
    _draw_background(img, idn, rng)

    angle = rng.uniform(-8.0, 8.0)
    scale = 1.0 + rng.uniform(-0.06, 0.06)
    tx, ty = rng.uniform(-4.0, 4.0, 2) * size / 112.0
    cv = _Canvas(img, scale, angle, tx, ty)
    yaw = rng.uniform(-2.5, 2.5)            # feature shift in px (a hint of head turn)
    jit = rng.uniform(-0.5, 0.5)

    skin = tuple(idn["skin"])
    cy, fw, fh = idn["face_cy"], idn["face_w"], idn["face_h"]
    # clothing and neck
    cloth = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.8), rng.uniform(0.1, 0.9))
    cv.poly([[56 - fw * 0.45, cy + 20], [56 + fw * 0.45, cy + 20], [56 + fw * 0.5, 120], [56 - fw * 0.5, 120]],
            _shade(skin, 0.8))
    cv.ellipse((56, cy + fh + 26), (fw + 26, 18), 0, cloth)
    _draw_hair_back(cv, idn, jit)
    # ears
    for s in (-1, 1):
        ex = 56 + s * (fw + idn["ear_out"] * 0.5 - 1) - yaw * 0.3
        cv.ellipse((ex, idn["eye_y"] + 8), (idn["ear_size"] * 0.45 + idn["ear_out"] * 0.3, idn["ear_size"]),
                   s * 8, _shade(skin, 0.9))
        cv.ellipse((ex + s * 0.8, idn["eye_y"] + 8), (idn["ear_size"] * 0.2, idn["ear_size"] * 0.6), s * 8,
                   _shade(skin, 0.72), 1.0)
    # face
    cv.poly(_face_outline(idn), skin)
    if idn["blush"] > 0.05:
        blush = tuple(float(c) for c in np.array(skin) * (1 - idn["blush"] * 0.5)
                      + np.array([210, 70, 80]) * idn["blush"] * 0.5)
        for s in (-1, 1):
            cv.ellipse((56 + s * fw * 0.55 + yaw, 74), (7, 4.5), 0, blush)
    _draw_hair_top(cv, idn, jit)

    # eyes and brows
    dx, ey = idn["eye_dx"], idn["eye_y"]
    ex = (56 - dx + yaw, 56 + dx + yaw)
    openness = float(np.clip(rng.normal(0.95, 0.12), 0.35, 1.15)) if rng.random() > 0.04 else 0.1
    look = rng.uniform(-1.0, 1.0)
    raise_ = rng.uniform(-1.2, 1.8)
    for side, x in ((-1, ex[0]), (1, ex[1])):
        _draw_eye(cv, x, ey, idn, side, openness, look)
        bx_in = 56 + yaw + side * idn["brow_gap"] / 2
        bx_out = x + side * idn["eye_w"] * idn["brow_len"] + side * 2
        by = ey - idn["eye_h"] - 5 - raise_
        slope = math.tan(math.radians(idn["brow_angle"]))
        xs = np.linspace(bx_in, bx_out, 7)
        t = (xs - bx_in) / (bx_out - bx_in)
        ys = by + slope * (xs - bx_in) * side * -1 * 0.6 - idn["brow_arch"] * np.sin(t * math.pi)
        cv.poly(np.stack([xs, ys], 1), tuple(idn["brow_colour"]), idn["brow_thick"])

    # nose
    nl, nw = idn["nose_len"], idn["nose_w"]
    nx = 56 + yaw * 1.2
    dark = _shade(skin, 0.7)
    if idn["nose_bridge"] > 0.4:
        cv.poly([[nx - 2, ey + 4], [nx - 3, nl - 4]], _shade(skin, 0.82), 1.2)
    cv.ellipse((nx, nl - 1.5), (nw * 0.55, 3.2), 0, _shade(skin, 1.07))
    for s in (-1, 1):
        cv.ellipse((nx + s * nw * 0.5, nl + 0.5), (1.7, 1.1), s * 20, dark)
    cv.ellipse((nx, nl + 1), (nw * 0.85, 3), 0, _shade(skin, 0.78), 1.0, 20, 160)

    # mouth
    mw, my = idn["mouth_w"] * rng.uniform(0.93, 1.07), idn["mouth_y"]
    mx_ = 56 + yaw
    smile = idn["smile"] + rng.normal(0, 1.0)
    lip = tuple(idn["lip_colour"])
    lt = idn["lip_thick"]
    upper = _curve(mx_ - mw, mx_ + mw, my, smile - lt * 0.2)
    upper_top = _curve(mx_ + mw, mx_ - mw, my - lt * 0.9, smile * 0.3)
    lower = _curve(mx_ + mw, mx_ - mw, my, smile + lt * 1.2)
    cv.poly(np.concatenate([upper, upper_top], 0), _shade(lip, 0.9))
    cv.poly(np.concatenate([_curve(mx_ - mw, mx_ + mw, my, smile), lower], 0), lip)
    cv.poly(_curve(mx_ - mw, mx_ + mw, my, smile * 0.9), _shade(lip, 0.45), 1.0)
    _draw_beard(cv, idn, mx_, my, mw, lt)

    # marks
    if idn["mole"] is not None:
        x, y, r = idn["mole"]
        cv.circle((x + yaw, y), r, (60, 38, 30))
    for x, y in idn["freckles"]:
        cv.circle((x + yaw, y), 0.8, _shade(skin, 0.68))
    if idn["scar"] is not None:
        x0, y0, x1, y1 = idn["scar"]
        cv.line((x0 + yaw, y0), (x1 + yaw, y1), _shade(skin, 0.62), 1.3)
    if idn["glasses"] is not None:
        _draw_glasses(cv, idn, ex, ey)

    return _photometric(img, rng)


def _photometric(img, rng):
    """Lighting gradient, brightness, contrast, colour cast and (luminance) sensor noise."""
    h, w = img.shape[:2]
    ang = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 0.45)
    gain = (rng.uniform(0.78, 1.15) * (1.0 + rng.normal(0, 0.05, 3))).astype(np.float32)
    contrast = np.float32(rng.uniform(0.8, 1.15))
    sigma = np.float32(rng.uniform(0.5, 3.0))
    xx, yy = _grid(h, w)
    ca, sa = math.cos(ang), math.sin(ang)
    light = np.float32(strength) * (np.float32(ca) * xx + np.float32(sa) * yy - np.float32(0.5 * (ca + sa))) + 1
    f = img.astype(np.float32)
    f *= light[..., None]
    f *= gain
    mean = f.mean()
    f *= contrast
    noise = rng.standard_normal((h, w, 1), dtype=np.float32)
    noise *= sigma
    noise += np.float32(mean * (1 - contrast) + 0.5)
    f += noise
    np.clip(f, 0, 255, out=f)
    return f.astype(np.uint8)


# --------------------------------------------------------------------------- #
# degradation
# --------------------------------------------------------------------------- #
def degrade_quality(img, rng, level):
    """A low-quality version of an RGB uint8 image.

    In order: low light (probability ``0.3 + 0.4 * level``: darkening by a gain
    down to ``1 - 0.55 * level`` and a gamma up to ``1 + 0.8 * level``), colour
    loss (probability ``0.15 + 0.35 * level``: partial to full desaturation and
    a white-balance cast), downscale of the short side to about
    ``40 - 28 * level`` px (clipped to 12..40, random interpolation) and back, a
    Gaussian blur (sigma up to ``0.4 + 1.4 * level``), Gaussian noise (sigma up
    to ``1 + 5 * level``) and a JPEG round trip at quality about
    ``40 - 30 * level`` (clipped to 10..40). Even ``level=0`` is clearly worse
    than the input; ``level=1`` is very poor.

    Args:
        img: ``uint8 [H, W, 3]`` RGB.
        rng: ``np.random.Generator`` (or an int seed / None).
        level: severity in [0, 1].

    Returns:
        ``uint8 [H, W, 3]`` RGB, a new array.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    level = _check_fraction("level", level)
    img = _check_image(img)
    h, w = img.shape[:2]
    f = img.astype(np.float32)
    if rng.random() < 0.3 + 0.4 * level:
        f = 255.0 * (f / 255.0) ** rng.uniform(1.0, 1.0 + 0.8 * level) * rng.uniform(1 - 0.55 * level, 1.0)
    if rng.random() < 0.15 + 0.35 * level:
        grey = f @ np.array([0.299, 0.587, 0.114], np.float32)
        amount = np.float32(rng.uniform(0.4, 1.0))
        f = f * (1 - amount) + grey[..., None] * amount
        f = f * (1.0 + rng.normal(0, 0.1 * level, 3)).astype(np.float32)
    side = int(np.clip(round(40 - 28 * level + rng.normal(0, 3)), 12, 40))
    scale = min(side / min(h, w), 1.0)
    small_size = (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1))
    down = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_NEAREST)[rng.choice(3, p=[0.6, 0.3, 0.1])]
    small = cv2.resize(np.clip(f + 0.5, 0, 255).astype(np.uint8), small_size, interpolation=down)
    out = cv2.resize(small, (w, h), interpolation=(cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(2))])
    sigma = rng.uniform(0.0, 0.4 + 1.4 * level)
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    noise = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(1.0, 1.0 + 5.0 * level))
    out = np.clip(out.astype(np.float32) + noise + 0.5, 0, 255).astype(np.uint8)
    q = int(np.clip(round(40 - 30 * level + rng.normal(0, 3)), 10, 40))
    return decode_jpeg(encode_jpeg(out, q))


# --------------------------------------------------------------------------- #
# encoding and writers
# --------------------------------------------------------------------------- #
def encode_jpeg(img_rgb, quality=_JPEG_TRAIN_QUALITY):
    """RGB uint8 image -> JPEG bytes. cv2 encodes BGR, so the channels are swapped first;
    RGB decoders (``mx.image.imdecode``, PIL) then return the original colours."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img_rgb[..., ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def decode_jpeg(data):
    """JPEG (or PNG) bytes -> RGB uint8 image (the inverse of :func:`encode_jpeg`)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("could not decode image bytes")
    return np.ascontiguousarray(img[..., ::-1])


def write_train_rec(out_dir, samples, num_classes=None, size=112):
    """Write an insightface "header0" ``train.rec`` / ``train.idx`` plus ``property``.

    Layout (what MS1M / Glint packs use and arcface_torch's ``MXFaceDataset`` reads):
    record 0 has ``flag=2`` and label ``[N + 1, N + 1 + num_ids]``; records ``1..N``
    are the images with scalar float labels; records ``N+1 .. N+num_ids`` hold, for
    each label in order, ``[first_key, end_key)`` of its images. ``property`` is
    ``num_classes,size,size``.

    Args:
        out_dir: folder (created if missing); existing files of these names are replaced.
        samples: iterable of ``(image, label)``; ``image`` is an RGB uint8 array
            (JPEG-encoded at quality 95) or already-encoded ``bytes``; labels are
            ints ``0..num_classes-1``, **grouped** (all images of a label contiguous).
        num_classes: defaults to ``max(label) + 1``.
        size: image side written to ``property``.

    Returns:
        ``(num_images, num_classes)``.
    """
    from ..utils import import_mxnet
    mx = import_mxnet()  # lazy: the rest of the module needs only numpy + OpenCV

    os.makedirs(out_dir, exist_ok=True)
    idx_path, rec_path = os.path.join(out_dir, "train.idx"), os.path.join(out_dir, "train.rec")
    writer = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "w")
    ranges, order = {}, []
    n = 0
    try:
        # Record 0 first, with a placeholder label of the same size; its two floats are
        # patched in place once N and the number of identities are known.
        writer.write_idx(0, _header0_payload(mx, 0, 0))
        for key, (image, label) in enumerate(samples, start=1):
            label = _check_label(label)
            if label not in ranges:
                ranges[label] = [key, key + 1]
                order.append(label)
            elif ranges[label][1] != key:
                raise QGFaceConfigError(f"labels must be grouped: label {label} reappears at image {key}")
            else:
                ranges[label][1] = key + 1
            data = image if isinstance(image, (bytes, bytearray)) else encode_jpeg(_check_image(image))
            writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0), bytes(data)))
            n = key
        if n == 0:
            raise QGFaceConfigError("write_train_rec: no samples")
        ncls = (max(order) + 1) if num_classes is None else _check_int("num_classes", num_classes, 1)
        if max(order) >= ncls:
            raise QGFaceConfigError(f"label {max(order)} is out of range for num_classes={ncls}")
        for j, label in enumerate(sorted(order)):
            k = n + 1 + j
            writer.write_idx(k, mx.recordio.pack(
                mx.recordio.IRHeader(0, np.array(ranges[label], np.float32), k, 0), b""))
    finally:
        writer.close()
    # patch record 0: magic (4) + length (4) + IRHeader (24) precede its two label floats
    final = _header0_payload(mx, n + 1, n + 1 + len(order))
    with open(rec_path, "r+b") as f:
        head = f.read(8 + len(final))
        if head[8:] != _header0_payload(mx, 0, 0):
            raise RuntimeError("train.rec: record 0 is not where it was written")
        f.seek(8)
        f.write(final)
    with open(os.path.join(out_dir, "property"), "w") as f:
        f.write(f"{ncls},{size},{size}\n")
    return n, ncls


def _header0_payload(mx, first_identity_key, end_key):
    """Record 0 of an insightface rec: flag 2, label [N+1, N+1+num_ids], no data, id2 = 1."""
    return mx.recordio.pack(mx.recordio.IRHeader(0, np.array([first_identity_key, end_key], np.float32), 0, 1), b"")


def write_verification_bin(path, images, issame):
    """Write an insightface verification ``.bin``: a pickle of ``(bins, issame_list)``.

    ``bins`` is a list of encoded image bytes, two per pair (pair ``i`` is
    ``bins[2i]``, ``bins[2i+1]``); ``issame_list`` a list of bools. This is what
    arcface_torch's ``eval/verification.py::load_bin`` reads (``pickle.load``
    then ``mx.image.imdecode``, which gives RGB).

    Args:
        path: output file.
        images: sequence of ``2 * len(issame)`` RGB uint8 arrays or encoded bytes.
        issame: sequence of bools.
    """
    issame = [bool(v) for v in issame]
    if len(images) != 2 * len(issame):
        raise QGFaceConfigError(f"write_verification_bin: {len(images)} images for {len(issame)} pairs "
                                f"(need 2 per pair)")
    bins = [bytes(im) if isinstance(im, (bytes, bytearray)) else encode_jpeg(_check_image(im))
            for im in images]
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=_BIN_PICKLE_PROTOCOL)


# --------------------------------------------------------------------------- #
# the data set
# --------------------------------------------------------------------------- #
def _rng(seed, *keys):
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(k) for k in keys]]))


def _lq_level(rng):
    """Severity of a degraded image: sqrt(U(0, 1)), skewed to the hard end (mean 2/3,
    i.e. a typical downscale to ~21 px)."""
    return float(math.sqrt(rng.uniform(0.0, 1.0)))


@functools.lru_cache(maxsize=4096)
def _identity(seed, stream, index):
    return draw_identity(_rng(seed, stream, index))


def _train_identity_images(task):
    """Worker: every image of training identity ``c`` -> list of ``(jpeg_bytes, level)``."""
    seed, c, images_per_identity, n_lq, size = task
    idn = _identity(seed, _STREAM_TRAIN_ID, c)
    lq = set(_rng(seed, _STREAM_TRAIN_SPLIT, c).choice(images_per_identity, n_lq, replace=False).tolist())
    out = []
    for j in range(images_per_identity):
        r = _rng(seed, _STREAM_TRAIN_IMG, c, j)
        img = render_face(idn, r, size)
        level = -1.0
        if j in lq:
            level = _lq_level(r)
            img = degrade_quality(img, r, level)
        out.append((encode_jpeg(img), level))
    return out


def _val_pair_images(task):
    """Worker: one verification pair -> ``(jpeg_a, jpeg_b)``; ``a`` degraded for an LQ pair."""
    seed, p, a, b, lq, size = task
    ra, rb = _rng(seed, _STREAM_VAL_IMG, p, 0), _rng(seed, _STREAM_VAL_IMG, p, 1)
    img_a = render_face(_identity(seed, _STREAM_VAL_ID, a), ra, size)
    img_b = render_face(_identity(seed, _STREAM_VAL_ID, b), rb, size)
    if lq:
        img_a = degrade_quality(img_a, ra, _lq_level(ra))
    return encode_jpeg(img_a), encode_jpeg(img_b)


class _Mapper:
    """Ordered map, in this process or in a pool of forked workers (the output is the same)."""

    def __init__(self, workers):
        self.pool = None
        if workers > 1:
            import multiprocessing

            self.pool = multiprocessing.get_context("fork").Pool(workers)

    def __call__(self, fn, tasks, chunksize=1):
        if self.pool is None:
            return map(fn, tasks)
        return self.pool.imap(fn, tasks, chunksize)

    def close(self, failed=False):
        if self.pool is not None:
            if failed:
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()
            self.pool = None


def make_dataset(out_dir, num_identities=100, images_per_identity=20, lq_fraction=0.3,
                 num_val_identities=40, val_pairs=600, seed=0, size=112, progress=None, workers=1):
    """Generate the synthetic mixed-quality data set in arcface_torch's layout.

    Files written to ``out_dir`` (created if missing; same-named files replaced):

    * ``train.rec`` / ``train.idx`` / ``property``: ``num_identities *
      images_per_identity`` images (see :func:`write_train_rec`), grouped by
      label ``0..num_identities-1``. In every identity, ``round(lq_fraction *
      images_per_identity)`` images (random positions) are degraded with
      :func:`degrade_quality` at a level ``sqrt(U(0, 1))`` (skewed to severe).
    * ``train_quality.txt``: one line per image, ``key label level``, where
      ``level`` is ``-1`` for a clean (HQ) image.
    * ``synthetic_val.bin``: ``val_pairs`` verification pairs of
      ``num_val_identities`` **held-out** identities (never in train). Pairs come
      in groups of four -- HQ-HQ same, HQ-HQ different, LQ-HQ same, LQ-HQ
      different (an LQ-HQ pair has its *first* image degraded) -- so same /
      different alternate and every fold of a 10-fold split is balanced.
    * ``synthetic_val_hq.bin`` / ``synthetic_val_lq.bin``: the HQ-HQ and the
      LQ-HQ halves of it (``val_pairs / 2`` pairs each, same / different
      alternating, byte-identical images).
    * ``dataset.json``: the summary returned, less its ``seconds`` entry (so the
      file, too, is the same for the same arguments).

    Args:
        out_dir: output folder.
        num_identities: training identities (>= 1).
        images_per_identity: images per training identity (>= 1).
        lq_fraction: fraction of degraded training images, in [0, 1].
        num_val_identities: held-out identities for the verification sets (>= 2).
        val_pairs: number of pairs in ``synthetic_val.bin``; a positive multiple of
            40, so that each of the three ``.bin`` files has a multiple of 20 pairs
            (10 folds, each with as many same as different pairs).
        seed: int seed; the output is byte-identical for the same arguments.
        size: image side (112 for arcface_torch).
        progress: optional callable ``(stage: str, done: int, total: int)``.
        workers: processes that render (``fork``ed; 1 = this process only). The
            files are byte-identical for any number of workers.

    Returns:
        The summary dict also written to ``dataset.json``.

    Raises:
        ValueError (``QGFaceConfigError``): a bad argument; the message names it.
    """
    num_identities = _check_int("num_identities", num_identities, 1)
    images_per_identity = _check_int("images_per_identity", images_per_identity, 1)
    lq_fraction = _check_fraction("lq_fraction", lq_fraction)
    num_val_identities = _check_int("num_val_identities", num_val_identities, 2)
    val_pairs = _check_int("val_pairs", val_pairs, 40)
    if val_pairs % 40:
        raise QGFaceConfigError(
            f"val_pairs={val_pairs} must be a multiple of 40: the HQ-HQ and LQ-HQ sets get half each, and "
            f"each set needs a multiple of 20 pairs for balanced 10-fold verification")
    seed = _check_int("seed", seed, 0)
    size = _check_int("size", size, 16)
    workers = _check_int("workers", workers, 1)
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    report = progress or (lambda stage, done, total: None)
    mapper = _Mapper(workers)
    try:
        # ---- training set
        n_lq = int(round(lq_fraction * images_per_identity))
        levels = []

        def train_samples():
            tasks = [(seed, c, images_per_identity, n_lq, size) for c in range(num_identities)]
            for c, images in enumerate(mapper(_train_identity_images, tasks)):
                for data, level in images:
                    levels.append((c, level))
                    yield data, c
                report("train", (c + 1) * images_per_identity, num_identities * images_per_identity)

        n_img, _ = write_train_rec(out_dir, train_samples(), num_classes=num_identities, size=size)
        with open(os.path.join(out_dir, "train_quality.txt"), "w") as f:
            f.write("# key label level (-1 = clean HQ image; else degrade_quality level in [0, 1])\n")
            f.writelines(f"{k} {c} {lv:.4f}\n" for k, (c, lv) in enumerate(levels, start=1))
        t_train = time.perf_counter() - t0

        # ---- verification sets (held-out identities): plan the pairs here, render in workers
        pr = _rng(seed, _STREAM_VAL_PAIRS)
        pos_cycle = pr.permutation(num_val_identities)
        tasks = []
        for g in range(val_pairs // 4):
            for lq in (False, True):
                a = int(pos_cycle[(2 * g + lq) % num_val_identities])
                tasks.append((seed, len(tasks), a, a, lq, size))
                a, b = (int(v) for v in pr.choice(num_val_identities, 2, replace=False))
                tasks.append((seed, len(tasks), a, b, lq, size))
        hq_imgs, hq_same, lq_imgs, lq_same, all_imgs, all_same = [], [], [], [], [], []
        for task, pair in zip(tasks, mapper(_val_pair_images, tasks, chunksize=8)):
            same, lq = task[2] == task[3], task[4]
            all_imgs += pair
            all_same.append(same)
            (lq_imgs if lq else hq_imgs).extend(pair)
            (lq_same if lq else hq_same).append(same)
            if len(all_same) % 100 == 0 or len(all_same) == val_pairs:
                report("val", len(all_same), val_pairs)
    except BaseException:
        mapper.close(failed=True)
        raise
    mapper.close()
    files = {"rec": "train.rec", "idx": "train.idx", "property": "property", "quality": "train_quality.txt",
             "val": "synthetic_val.bin", "val_hq": "synthetic_val_hq.bin", "val_lq": "synthetic_val_lq.bin",
             "summary": "dataset.json"}
    write_verification_bin(os.path.join(out_dir, files["val"]), all_imgs, all_same)
    write_verification_bin(os.path.join(out_dir, files["val_hq"]), hq_imgs, hq_same)
    write_verification_bin(os.path.join(out_dir, files["val_lq"]), lq_imgs, lq_same)

    summary = {
        "generator": "qgface_plugin.synthetic.faces", "format_version": 1,
        "seed": seed, "size": size,
        "num_classes": num_identities, "images_per_identity": images_per_identity,
        "num_images": n_img, "lq_fraction": lq_fraction, "lq_images": n_lq * num_identities,
        "hq_images": n_img - n_lq * num_identities,
        "num_val_identities": num_val_identities, "val_pairs": val_pairs,
        "val_pairs_hq": len(hq_same), "val_pairs_lq": len(lq_same),
        "val_same_pairs": int(sum(all_same)),
        "rec_layout": "header0: record 0 label [N+1, N+1+num_classes]; images 1..N; identity records after",
        "val_sets": ["synthetic_val", "synthetic_val_hq", "synthetic_val_lq"],
        "files": files,
    }
    with open(os.path.join(out_dir, files["summary"]), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    summary["seconds"] = {"train": round(t_train, 3), "total": round(time.perf_counter() - t0, 3)}
    summary["workers"] = workers
    return summary


# --------------------------------------------------------------------------- #
# reading back, preview
# --------------------------------------------------------------------------- #
def read_rec_images(rec_dir, keys=None):
    """Read ``(key, label, rgb_image)`` from a header0 ``train.rec`` (mxnet's reader,
    decoded from JPEG to RGB). ``keys`` defaults to every image record."""
    from ..utils import import_mxnet
    mx = import_mxnet()

    rec = mx.recordio.MXIndexedRecordIO(os.path.join(rec_dir, "train.idx"),
                                        os.path.join(rec_dir, "train.rec"), "r")
    try:
        if keys is None:
            header, _ = mx.recordio.unpack(rec.read_idx(0))
            keys = range(1, int(header.label[0])) if header.flag > 0 else sorted(rec.keys)
        out = []
        for k in keys:
            header, data = mx.recordio.unpack(rec.read_idx(int(k)))
            label = header.label if isinstance(header.label, numbers.Number) else header.label[0]
            out.append((int(k), int(label), decode_jpeg(data)))
        return out
    finally:
        rec.close()


def contact_sheet(rec_dir, rows=8, cols=10, pad=2):
    """A preview grid (RGB uint8) of a data set written by :func:`make_dataset`.

    Row ``r`` shows identity ``r``: its clean images first, then its degraded
    ones, which get a red frame. Rows are separated by ``pad`` px.
    """
    rows = _check_int("rows", rows, 1)
    cols = _check_int("cols", cols, 1)
    levels = {}
    qpath = os.path.join(rec_dir, "train_quality.txt")
    if os.path.exists(qpath):
        with open(qpath) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    k, c, lv = line.split()
                    levels[int(k)] = (int(c), float(lv))
    by_label = {}
    for k, (c, lv) in sorted(levels.items()):
        by_label.setdefault(c, []).append((lv >= 0, k))
    wanted = []
    for c in sorted(by_label)[:rows]:
        items = sorted(by_label[c])                 # HQ (False) first, then LQ
        hq = [k for is_lq, k in items if not is_lq]
        lq = [k for is_lq, k in items if is_lq]
        n_lq = min(len(lq), max(cols // 3, 1) if lq else 0)
        wanted.append(hq[:cols - n_lq] + lq[:n_lq])
    images = {k: img for k, _, img in read_rec_images(rec_dir, [k for row in wanted for k in row])}
    s = next(iter(images.values())).shape[0] if images else 112
    sheet = np.full((len(wanted) * (s + pad) + pad, cols * (s + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(wanted):
        for c, k in enumerate(row):
            y, x = pad + r * (s + pad), pad + c * (s + pad)
            tile = images[k].copy()
            if levels.get(k, (0, -1.0))[1] >= 0:
                cv2.rectangle(tile, (0, 0), (s - 1, s - 1), (255, 0, 0), 2)
            sheet[y:y + s, x:x + s] = tile
    return sheet


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise QGFaceConfigError(f"{name}={value!r} must be an integer >= {minimum}")
    if value < minimum:
        raise QGFaceConfigError(f"{name}={value!r} must be >= {minimum}")
    return int(value)


def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise QGFaceConfigError(f"{name}={value!r} must be a number in [0, 1]")
    return float(value)


def _check_label(label):
    if isinstance(label, bool) or not isinstance(label, numbers.Integral) or label < 0:
        raise QGFaceConfigError(f"label={label!r} must be an integer >= 0")
    return int(label)


def _check_image(img):
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise QGFaceConfigError(
            f"image must be a uint8 [H, W, 3] RGB array, got {type(img).__name__} "
            f"{getattr(img, 'dtype', '')} {getattr(img, 'shape', '')}")
    return img
