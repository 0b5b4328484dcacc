"""The Redfish BMC provider (a provider package: provider.json, provider.py and its modules).

Importable as providers.redfish for tests and appliance code; in production it runs only
inside the provider sandbox. It must never import appliance code: the package is shipped
on its own.
"""
