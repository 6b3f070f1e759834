"""Collect run results (metrics.json) into tables beside the paper's numbers."""
