"""Brings methods and tasks together: model, training, FLOP counting, timing, records, reports."""
