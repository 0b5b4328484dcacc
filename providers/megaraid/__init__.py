"""The MegaRAID provider (storcli / perccli); its modules also run on their own in BootOS."""
