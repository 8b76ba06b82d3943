"""Encoders, fusion methods and the MultimodalModel that composes them with task heads."""
