"""Personalization: profiles and cardholder data become APDU scripts for virtual or real cards."""
