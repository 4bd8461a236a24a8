"""State-dict maps from the official NCSN, NCSNv2 and score SDE checkpoints."""
