"""mmalign-trackers: TensorBoard, Weights & Biases and MLflow trackers for mmalign runs."""
