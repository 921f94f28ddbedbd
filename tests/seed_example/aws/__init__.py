"""Shims: the seed's ``aws`` package (Zerynth) resolved to this repository's device code."""
