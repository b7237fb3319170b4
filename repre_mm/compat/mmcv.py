"""mmcv: its hue jitter under numpy 2.

(This module is ``repre_mm.compat.mmcv``; ``import mmcv`` here is mmcv itself, imports being
absolute.)
"""
from repre_mm.compat._state import APPLIED, ORIGINALS


def _adjust_hue(img, hue_factor, backend=None):
    """mmcv 2.1's ``adjust_hue`` with the hue shift wrapped modulo 256 explicitly."""
    import cv2
    import mmcv.image.photometric as photometric
    import numpy as np
    from PIL import Image

    backend = backend or photometric.imread_backend
    if backend not in ('cv2', 'pillow'):
        raise ValueError(f"backend: {backend} is not supported. Supported: 'cv2', 'pillow'")
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f'hue_factor:{hue_factor} is not in [-0.5, 0.5].')
    shift = np.uint8(int(hue_factor * 255) % 256)
    if backend == 'pillow':
        pil_image = Image.fromarray(img[..., ::-1], mode='RGB')
        h, s, v = pil_image.convert('HSV').split()
        h = Image.fromarray(np.array(h, dtype=np.uint8) + shift, 'L')
        rgb = Image.merge('HSV', (h, s, v)).convert('RGB')
        return np.array(rgb, dtype=img.dtype)[..., ::-1]
    h, s, v = cv2.split(cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2HSV_FULL))
    hsv = cv2.merge([h + shift, s, v])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL).astype(img.dtype)


def _adjust_hue_fails(adjust_hue) -> bool:
    """The failure itself, on one pixel: a negative hue shift raises ``OverflowError``."""
    import numpy as np
    try:
        adjust_hue(np.zeros((1, 1, 3), np.uint8), -0.1, backend='cv2')
    except OverflowError:
        return True
    return False


def patch_mmcv_adjust_hue() -> bool:
    """mmcv 2.1's ``adjust_hue`` shifts the hue by ``np.uint8(hue_factor * 255)``; numpy >= 2
    refuses a negative Python int there (``OverflowError: Python integer -5 out of bounds for
    uint8``), so MoCo v3's ColorJitter (hue=0.1) crashes on about half of the images. numpy 1
    wrapped the negative shift modulo 256; the replacement does that explicitly.

    Applies only where mmcv's own function raises that error on a one-pixel image (numpy >= 2
    with mmcv 2.1.0). Under numpy 1, or an mmcv that is fixed, mmcv is left alone
    (``tests/test_compat.py``). Measured on mmcv 2.1.0 with numpy 2.4.6 and 1.26.4."""
    import mmcv
    import mmcv.image
    import mmcv.image.photometric
    if 'adjust_hue' in APPLIED or not _adjust_hue_fails(mmcv.image.photometric.adjust_hue):
        return False
    ORIGINALS['adjust_hue'] = mmcv.image.photometric.adjust_hue
    for module in (mmcv, mmcv.image, mmcv.image.photometric):
        module.adjust_hue = _adjust_hue
    APPLIED.add('adjust_hue')
    return True
