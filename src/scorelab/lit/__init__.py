"""The Lightning layer: ScoreModule and callbacks."""
