"""Training: recipes and settings, the input pipeline and caches, cross-validation, ensembles."""
