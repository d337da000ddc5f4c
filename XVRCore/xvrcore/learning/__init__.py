"""Patient-specific pose networks: the network, pose sampling, augmentation, training, model files and inference."""
