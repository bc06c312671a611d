"""Developer and packaging tools, apart from product code: README screenshots, the bundle self-test."""
