"""Parts shared by the detectors: backbone, patch features, coreset sampling, search, tiling, map post-processing."""
