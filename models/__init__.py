"""PyTorch sequential recommenders, training, evaluation and MLflow logging."""
