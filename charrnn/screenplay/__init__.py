"""Screenplays: Fountain cleaning and structure scores, and typesetting (PDF, HTML, FDX)."""
