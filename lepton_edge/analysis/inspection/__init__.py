"""Triggered inspection: a trigger per part, ROI rules, one fail-safe verdict per trigger."""
