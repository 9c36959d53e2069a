"""perturbations: the graded DeeperForensics-1.0 perturbations."""
