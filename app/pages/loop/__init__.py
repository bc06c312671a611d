"""The LEK loop page."""
