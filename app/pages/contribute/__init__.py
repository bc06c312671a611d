"""The Contribute page: first-run steps, the model step, live progress of a contribution."""
