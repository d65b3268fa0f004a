"""The networks: backbones and heads, EfficientNet-Lite, the out-of-distribution detector."""
