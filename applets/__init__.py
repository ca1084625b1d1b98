"""The applications on the card: social security, extension area and financial application."""
