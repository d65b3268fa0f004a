"""Core logic of the dermoscopy classifier: data, training, evaluation, inference, storage.

Never imports Streamlit. `python -m core --help` is its command line.
"""
