"""Using a trained model: the model type and its card, loading, export, the HTTP service."""
