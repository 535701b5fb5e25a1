"""Pure tensor/array maths: CAM fusion, dense CRF, affinity labels, random walk, PAMR, confusion matrix."""
