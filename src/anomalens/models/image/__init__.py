"""Image detectors: PatchCore (default), PaDiM and the convolutional autoencoder."""
