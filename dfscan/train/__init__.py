"""Training: face extraction, backbones, losses, augmentations, the training loop, recipes
and export to a model bundle. Needs `pip install 'dfscan[train]'` (torch); nothing here is imported by
the scanner, and importing this package imports no torch."""
