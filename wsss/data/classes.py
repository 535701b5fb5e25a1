"""Class lists. The dataset layer takes a class list and a palette as parameters; nothing assumes 21 classes."""
from __future__ import annotations

# The 20 PASCAL VOC foreground classes, in label order 1..20 (0 is background).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
BACKGROUND = "background"
