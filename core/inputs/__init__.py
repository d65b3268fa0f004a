"""Datasets, images, splits and the label vocabularies: what a model reads (no TensorFlow)."""
