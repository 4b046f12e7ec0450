"""Models of the analytics app (see ../shared/DESIGN.md for what lives here)."""
