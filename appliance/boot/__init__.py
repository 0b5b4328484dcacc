"""appliance/boot."""
