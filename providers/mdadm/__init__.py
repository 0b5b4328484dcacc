"""The mdadm software-RAID provider; its modules also run on their own in BootOS."""
