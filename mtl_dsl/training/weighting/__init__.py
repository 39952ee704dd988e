"""Loss weighting: the interface every method implements, the loss-based methods, the gradient
methods over torchjd's aggregators, and the table of which class implements which method
(docs/weighting.md)."""
