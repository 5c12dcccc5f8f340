"""``mmalign study``: a grid of alignment arms over seeds, each arm trained from the same SFT model."""
