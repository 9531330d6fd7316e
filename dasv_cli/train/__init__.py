"""dasv.train: training examples, the training loop and distributed set-up."""
