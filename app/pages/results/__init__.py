"""The Results page: benchmark result sets (model.py) and their charts and tables (page.py)."""
