"""The terminal side: one implementation of what hospital readers, kiosks and perso lines send a card."""
