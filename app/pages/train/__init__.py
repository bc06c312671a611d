"""The Train page: the LoRA form (form.py) and the live run view (page.py)."""
