"""Tasks: declarative task specs, data generators and loaders of the official formats."""
