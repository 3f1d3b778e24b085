"""Brings methods and tasks together, one folder per stage of the data flow:

config/ (what to run) -> training/ (model, loop) -> measure/ (MACs, time, memory) -> sweep/ (runs to
records) -> report/ (records to tables and plots); cli.py on top.
"""
