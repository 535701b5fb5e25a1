"""Pure tensor/array maths: CAM fusion, dense CRF, affinity labels, random walk, PAMR, confusion matrix.

Ops import neither :mod:`wsss.data` nor the stages, and raise ``ValueError`` for bad arguments; the stages turn
those into user errors.
"""

IGNORE_INDEX = 255  # the label value that marks pixels to ignore, in masks and in every op that reads them
