"""What lasts: run folders and their cards, CSV files and the DuckDB database (no TensorFlow)."""
