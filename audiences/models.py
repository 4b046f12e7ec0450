"""Models of the audiences app (see ../shared/DESIGN.md for what lives here)."""
