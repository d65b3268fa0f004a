"""Using a trained run: prediction, Grad-CAM, evaluation on new data, case reports."""
