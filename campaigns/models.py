"""Models of the campaigns app (see ../shared/DESIGN.md for what lives here)."""
