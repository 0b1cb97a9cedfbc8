"""Hydra configs shipped as package data (see pyproject: zoo.conf -> conf/)."""
