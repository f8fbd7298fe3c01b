"""Pieces every layer of pycri shares: domain errors and logging set-up."""
