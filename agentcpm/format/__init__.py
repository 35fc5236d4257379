"""The MiniCPM-V text format: markup, parsing and JSON-type coercion of values."""
