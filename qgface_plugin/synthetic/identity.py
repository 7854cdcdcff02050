"""Synthetic identities: :func:`draw_identity` draws the fixed parameters of one cartoon person.

An identity is face shape, skin / hair / eye colours, hair style and hairline, eye spacing, brows, nose,
mouth and marks (a mole, freckles, glasses, a beard, a scar), plain Python values (JSON-serialisable).
The geometry follows the ArcFace 112x112 alignment template
(:data:`qgface_plugin.formats.face_crop.ARCFACE_TEMPLATE`): on average the eyes are near (38, 52) and
(74, 52), the nose tip near (56, 72), the mouth corners near y = 92. :func:`hsv_to_rgb` and :func:`shade`
are the colour helpers the renderer (:mod:`.faces`) shares. numpy only.
"""
import math

import numpy as np

__all__ = ["draw_identity", "hsv_to_rgb", "shade", "HAIR_STYLES", "BEARD_STYLES"]

HAIR_STYLES = ("short", "fringe", "side_part", "receding", "bald", "long", "curly", "buzz")
_HAIR_STYLE_P = (0.2, 0.14, 0.16, 0.1, 0.06, 0.18, 0.08, 0.08)
BEARD_STYLES = ("none", "moustache", "goatee", "full", "stubble")
_BEARD_STYLE_P = (0.6, 0.1, 0.1, 0.1, 0.1)


def hsv_to_rgb(h, s, v):
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
        return hsv_to_rgb(rng.uniform(8, 35), rng.uniform(0.2, 0.65), rng.uniform(0.35, 0.97))
    return hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.15, 0.5), rng.uniform(0.5, 0.95))


def _hair_colour(rng):
    kind = rng.choice(6, p=[0.3, 0.25, 0.15, 0.08, 0.12, 0.1])
    if kind == 0:      # black / near black
        return hsv_to_rgb(rng.uniform(0, 40), rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.2))
    if kind == 1:      # brown
        return hsv_to_rgb(rng.uniform(15, 35), rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.5))
    if kind == 2:      # blond
        return hsv_to_rgb(rng.uniform(35, 52), rng.uniform(0.3, 0.7), rng.uniform(0.6, 0.95))
    if kind == 3:      # red / auburn
        return hsv_to_rgb(rng.uniform(5, 22), rng.uniform(0.6, 0.9), rng.uniform(0.4, 0.8))
    if kind == 4:      # grey / white
        g = rng.uniform(0.45, 0.95)
        return hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.08), g)
    return hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.9))  # dyed


def _iris_colour(rng):
    kind = rng.choice(5, p=[0.45, 0.2, 0.12, 0.13, 0.1])
    hue, sat, val = [(25, 0.7, 0.3), (210, 0.55, 0.65), (110, 0.5, 0.5), (200, 0.12, 0.55),
                     (40, 0.6, 0.45)][kind]
    return hsv_to_rgb(hue + rng.uniform(-12, 12), float(np.clip(sat + rng.uniform(-0.15, 0.15), 0, 1)),
                       float(np.clip(val + rng.uniform(-0.15, 0.15), 0.05, 1)))


def shade(colour, factor):
    return tuple(min(max(float(c) * factor, 0.0), 255.0) for c in colour)


def draw_identity(rng):
    """Draw the parameters of one synthetic identity.

    Args:
        rng: ``np.random.Generator`` (or an int seed / None for ``np.random.default_rng``).

    Returns:
        A dict of plain Python values (JSON-serialisable): colours are RGB lists
        of three floats in [0, 255], lengths are pixels in the 112x112 frame
        (eye centres at ``56 -+ eye_dx, eye_y``, nose tip at ``nose_len``, mouth
        at ``mouth_y``; on average the ArcFace template, ``formats.face_crop.ARCFACE_TEMPLATE``).
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
    style = str(rng.choice(HAIR_STYLES, p=_HAIR_STYLE_P))
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
        "brow_colour": shade(hair if rng.random() < 0.8 else _hair_colour(rng), u(0.55, 0.9)),
        "brow_thick": u(1.3, 4.2), "brow_angle": u(-14.0, 14.0), "brow_arch": u(-1.0, 3.5),
        "brow_gap": u(5.0, 10.0), "brow_len": u(0.9, 1.35),
        "nose_len": u(66.0, 77.0), "nose_w": u(4.0, 9.0), "nose_bridge": u(0.0, 1.0),
        "mouth_w": u(10.0, 18.0), "mouth_y": u(88.0, 95.0), "lip_thick": u(1.5, 5.0),
        "lip_colour": hsv_to_rgb(u(340.0, 375.0), u(0.3, 0.75), u(0.35, 0.85)),
        "smile": u(-2.0, 4.0),
        "mole": None, "freckles": [], "glasses": None, "scar": None,
        "beard": str(rng.choice(BEARD_STYLES, p=_BEARD_STYLE_P)),
        "background": hsv_to_rgb(u(0, 360), u(0.05, 0.6), u(0.25, 0.95)),
        "bg_pattern": int(rng.integers(0, 4)),
    }
    ident["beard_colour"] = shade(hair, u(0.6, 1.0))
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
            "colour": hsv_to_rgb(u(0, 360), u(0.0, 0.8), u(0.05, 0.7)),
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
