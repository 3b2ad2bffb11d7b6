"""The mechanisms of dynamic updating: alterability, stack (reboots), world (stop-the-world)."""
