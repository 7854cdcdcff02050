"""JPEG coding of the synthetic images, in RGB order: OpenCV codes BGR, so the channels are swapped on
the way in and out; RGB decoders (``mx.image.imdecode``, PIL) then return the original colours. OpenCV."""
import cv2
import numpy as np

__all__ = ["JPEG_QUALITY", "encode_jpeg", "decode_jpeg", "write_jpeg"]

#: quality of every clean image written (training records, ``.bin`` sets, benchmark files).
JPEG_QUALITY = 95


def encode_jpeg(img_rgb, quality=JPEG_QUALITY):
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



def write_jpeg(path, img_rgb, quality=JPEG_QUALITY):
    """Write an RGB uint8 image to ``path`` as JPEG (``OSError`` when OpenCV cannot write it)."""
    if not cv2.imwrite(str(path), np.ascontiguousarray(img_rgb[..., ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]):
        raise OSError(f"cv2.imwrite failed for {path}")
