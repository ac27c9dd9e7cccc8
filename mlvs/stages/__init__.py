"""The pipeline's stages as the notebooks run them: `prepare` (01) and `train` (02)."""
