"""appliance/core."""
