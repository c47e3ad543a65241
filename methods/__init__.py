"""CIR methods registered by name (filled in by the method issues)."""
