"""Detection, pure: rule catalogue, evaluators with small state objects, incident lifecycle, correlation."""
