"""Dataset layer: VOC 2012 + SBD (+ COCO 2014) readers, split derivation, image labels, transforms, toy data."""
