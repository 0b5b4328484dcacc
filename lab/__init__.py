"""The virtual PXE lab: namespaces, the bank's DHCP server, QEMU servers and the appliance.

`python3 build.py lab` calls lab.run.up and `--down` calls lab.run.down. Nothing
here may touch a network outside the namespaces the lab creates.
"""
