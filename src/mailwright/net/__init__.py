"""mailwright."""
