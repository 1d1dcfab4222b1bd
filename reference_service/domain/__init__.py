"""Domain: request and response models and the operations on them, over the repository."""
