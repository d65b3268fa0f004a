"""Streamlit-only helpers: a module per page (`ui.train` for the Train page) and shared ones.

No module here imports TensorFlow or scikit-learn at module level, so Home, Metrics and History
stay light; the Predictor loads TensorFlow inside the function that builds it.
"""
