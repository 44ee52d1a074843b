"""Video detectors: stfeatures (default: appearance + motion memories) and the ConvLSTM autoencoder."""
