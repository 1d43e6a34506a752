"""Command-level flows: read a file, run stages and measurements, write one file atomically."""
