"""Polarizability: labelled datasets, reference labels (DFT, bond model) and tensorial ML models."""
