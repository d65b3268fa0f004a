"""Metrics, calibration, thresholds, comparisons, reports and figures, from scores already
computed (no TensorFlow)."""
