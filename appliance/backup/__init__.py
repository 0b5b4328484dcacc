"""Encrypted backups of the appliance database, and their restore.

backups.py does the work (create, list, verify, restore), envelope.py is the
file format, keysource.py the key that wraps each backup's data key, cli.py
the `cloudboot backup ...` commands and service.py the daily schedule inside
`cloudboot serve`. Nothing here may write the database in clear outside the
data directory.
"""
