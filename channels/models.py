"""Models of the channels app (see ../shared/DESIGN.md for what lives here)."""
