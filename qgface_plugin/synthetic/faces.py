"""Rendering of the synthetic faces: :func:`render_face` draws one image of an identity
(:func:`qgface_plugin.synthetic.identity.draw_identity`) with per-image nuisance.

The faces are cartoons drawn with OpenCV primitives (:mod:`.drawing`), built the way a face-recognition
data set is: every image of an identity has its own rotation, translation, scale, slight yaw, lighting
gradient, brightness / contrast / colour cast, expression, clothing, background clutter and sensor noise.
The geometry follows the ArcFace 112x112 alignment template. Degradation to low quality is
:mod:`.degrade`. numpy + OpenCV.
"""
import math

import cv2
import numpy as np

from .checks import check_int
from .drawing import AA, Canvas, curve, ellipse_pts, grid
from .identity import hsv_to_rgb, shade

__all__ = ["render_face"]


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



def _draw_background(img, idn, rng):
    """Background: half of the images use the identity's colour and pattern (a weak cue,
    like a person photographed in the same places), the rest a random colour and
    pattern; plus a gradient and a few random clutter shapes."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        base = np.array(idn["background"], np.float32) * rng.uniform(0.8, 1.15)
        pat = idn["bg_pattern"]
    else:
        base = np.array(hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95)),
                        np.float32)
        pat = int(rng.integers(0, 4))
    base += rng.normal(0, 10, 3).astype(np.float32)
    xx, yy = grid(h, w)
    ang = rng.uniform(0, 2 * math.pi)
    grad = (np.float32(math.cos(ang)) * xx + np.float32(math.sin(ang)) * yy - 0.5) * np.float32(rng.uniform(0, 60))
    img[:] = np.clip(base[None, None, :] + grad[..., None], 0, 255).astype(np.uint8)
    k = h / 112.0
    col = tuple(float(c) for c in np.clip(base * rng.uniform(0.7, 1.3) + rng.normal(0, 12, 3), 0, 255))
    if pat == 1:
        for x in np.arange(rng.uniform(0, 14), w, 14 * k):
            cv2.line(img, (int(x), 0), (int(x), h), col, max(int(2 * k), 1), AA)
    elif pat == 2:
        for y in np.arange(rng.uniform(0, 16), h, 16 * k):
            cv2.line(img, (0, int(y)), (w, int(y)), col, max(int(3 * k), 1), AA)
    elif pat == 3:
        for _ in range(10):
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                       int(rng.uniform(3, 9) * k), col, -1, AA)
    for _ in range(int(rng.integers(0, 6))):
        c = tuple(float(v) for v in rng.uniform(0, 255, 3))
        p0 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        if rng.random() < 0.5:
            p1 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            cv2.line(img, p0, p1, c, max(int(rng.uniform(1, 4) * k), 1), AA)
        else:
            cv2.rectangle(img, p0, (p0[0] + int(rng.uniform(4, 20) * k), p0[1] + int(rng.uniform(4, 20) * k)),
                          c, -1, AA)


def _draw_hair_back(cv, idn, jit):
    style, col, vol = idn["hair_style"], tuple(idn["hair_colour"]), idn["hair_volume"]
    cy, w, h = idn["face_cy"], idn["face_w"], idn["face_h"]
    if style == "long":
        dark = shade(col, 0.85)
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
    outer = ellipse_pts(56, cy - 2, w + vol * 0.6 + 1, h + vol, 180, 360, 25)
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
        cv.line((px, top - vol * 0.5), (px + 2 * part, line + 4), shade(col, 0.6), 1.2)
    if style in ("short", "long", "side_part") and vol > 5:
        shine = shade(col, 1.35) if sum(col) < 600 else shade(col, 0.8)
        cv.ellipse((56 - 8 * part, top + 6), (w * 0.45, 3), -8 * part, shine, 1.4, 200, 340)


def _draw_eye(cv, x, y, idn, side, openness, look):
    ew, eh = idn["eye_w"], idn["eye_h"] * openness
    tilt = idn["eye_tilt"] * side
    skin = tuple(idn["skin"])
    cv.ellipse((x, y + 1.2), (ew + 1.5, idn["eye_h"] + 1.5), tilt, shade(skin, 0.88))  # socket shade
    if eh > 0.8:
        cv.ellipse((x, y), (ew, eh), tilt, (242, 240, 235))
        r = min(idn["iris_r"], eh + 0.6)
        ix = x + look
        cv.circle((ix, y), r, tuple(idn["iris"]))
        cv.circle((ix, y), r * 0.45, (15, 12, 12))
        cv.circle((ix + 0.8, y - 0.8), max(r * 0.18, 0.4), (250, 250, 250))
        # re-cut the iris to the eye opening: paint the skin above and below the lids
        for sgn in (-1, 1):
            lid = ellipse_pts(x, y, ew, eh, 180 if sgn < 0 else 0, 360 if sgn < 0 else 180, 13)
            cap = ellipse_pts(x, y, ew + 0.2, eh + 6, 180 if sgn < 0 else 0, 360 if sgn < 0 else 180, 13)
            cv.poly(np.concatenate([lid, cap[::-1]], 0), shade(skin, 0.88))
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
    cv.poly(curve(ex[0] + rw, ex[1] - rw, ey - 1, -2, 5), col, th)
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
        cv.poly(np.concatenate([curve(mx_ - mw - 2, mx_ + mw + 2, my - 2, -2.5),
                                curve(mx_ + mw + 1, mx_ - mw - 1, my - 7, -1.5)], 0), col)
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
    size = check_int("size", size, 16)
    idn = identity
    img = np.empty((size, size, 3), np.uint8)
    _draw_background(img, idn, rng)

    angle = rng.uniform(-8.0, 8.0)
    scale = 1.0 + rng.uniform(-0.06, 0.06)
    tx, ty = rng.uniform(-4.0, 4.0, 2) * size / 112.0
    cv = Canvas(img, scale, angle, tx, ty)
    yaw = rng.uniform(-2.5, 2.5)            # feature shift in px (a hint of head turn)
    jit = rng.uniform(-0.5, 0.5)

    skin = tuple(idn["skin"])
    cy, fw, fh = idn["face_cy"], idn["face_w"], idn["face_h"]
    # clothing and neck
    cloth = hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.8), rng.uniform(0.1, 0.9))
    cv.poly([[56 - fw * 0.45, cy + 20], [56 + fw * 0.45, cy + 20], [56 + fw * 0.5, 120], [56 - fw * 0.5, 120]],
            shade(skin, 0.8))
    cv.ellipse((56, cy + fh + 26), (fw + 26, 18), 0, cloth)
    _draw_hair_back(cv, idn, jit)
    # ears
    for s in (-1, 1):
        ex = 56 + s * (fw + idn["ear_out"] * 0.5 - 1) - yaw * 0.3
        cv.ellipse((ex, idn["eye_y"] + 8), (idn["ear_size"] * 0.45 + idn["ear_out"] * 0.3, idn["ear_size"]),
                   s * 8, shade(skin, 0.9))
        cv.ellipse((ex + s * 0.8, idn["eye_y"] + 8), (idn["ear_size"] * 0.2, idn["ear_size"] * 0.6), s * 8,
                   shade(skin, 0.72), 1.0)
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
    dark = shade(skin, 0.7)
    if idn["nose_bridge"] > 0.4:
        cv.poly([[nx - 2, ey + 4], [nx - 3, nl - 4]], shade(skin, 0.82), 1.2)
    cv.ellipse((nx, nl - 1.5), (nw * 0.55, 3.2), 0, shade(skin, 1.07))
    for s in (-1, 1):
        cv.ellipse((nx + s * nw * 0.5, nl + 0.5), (1.7, 1.1), s * 20, dark)
    cv.ellipse((nx, nl + 1), (nw * 0.85, 3), 0, shade(skin, 0.78), 1.0, 20, 160)

    # mouth
    mw, my = idn["mouth_w"] * rng.uniform(0.93, 1.07), idn["mouth_y"]
    mx_ = 56 + yaw
    smile = idn["smile"] + rng.normal(0, 1.0)
    lip = tuple(idn["lip_colour"])
    lt = idn["lip_thick"]
    upper = curve(mx_ - mw, mx_ + mw, my, smile - lt * 0.2)
    upper_top = curve(mx_ + mw, mx_ - mw, my - lt * 0.9, smile * 0.3)
    lower = curve(mx_ + mw, mx_ - mw, my, smile + lt * 1.2)
    cv.poly(np.concatenate([upper, upper_top], 0), shade(lip, 0.9))
    cv.poly(np.concatenate([curve(mx_ - mw, mx_ + mw, my, smile), lower], 0), lip)
    cv.poly(curve(mx_ - mw, mx_ + mw, my, smile * 0.9), shade(lip, 0.45), 1.0)
    _draw_beard(cv, idn, mx_, my, mw, lt)

    # marks
    if idn["mole"] is not None:
        x, y, r = idn["mole"]
        cv.circle((x + yaw, y), r, (60, 38, 30))
    for x, y in idn["freckles"]:
        cv.circle((x + yaw, y), 0.8, shade(skin, 0.68))
    if idn["scar"] is not None:
        x0, y0, x1, y1 = idn["scar"]
        cv.line((x0 + yaw, y0), (x1 + yaw, y1), shade(skin, 0.62), 1.3)
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
    xx, yy = grid(h, w)
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
