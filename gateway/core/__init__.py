"""The vocabulary beneath every capability: settings, notices, storage helpers."""
