"""Fakes shared by the unit tests (importable as ``support`` through pytest's ``pythonpath``)."""
