"""Protocol cores shared by the appliance and the BootOS agent.

Everything under this package works on bytes, dicts and small state machines.
It must never import trio, open a socket or touch the store: the BootOS agent
imports these modules too, and the fuzzers drive them directly.
"""
