"""Synthetic mixed-quality faces: rendered identities, their degradation, training record sets and the
benchmark layouts (IJB, TinyFace, SCface) the evaluators read. For tests, the demo and studies; no real faces.
"""
