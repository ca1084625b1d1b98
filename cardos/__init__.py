"""The card operating system: a pure model of an ISO 7816 / FMCOS 2.0 CPU card."""

from .card import Card, CosConfig
from .sw import CardError

__all__ = ["Card", "CosConfig", "CardError"]
