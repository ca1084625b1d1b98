"""Transports that carry APDUs to a card: in-process, PC/SC through pyscard, and the vpcd link."""
