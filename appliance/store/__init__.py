"""The appliance's SQLite store (apsw): migrations, group-committed writes, pooled reads.

See docs/architecture.md ("Store") for how to use it. Nothing outside this
package opens the database file.
"""

from appliance.store._migrate import SchemaError
from appliance.store._readonly import ReadOnlyStore
from appliance.store._store import (
    APPLIANCE_ID_FILE,
    StorageFullError,
    Store,
    StoreError,
    now,
)

__all__ = [
    "APPLIANCE_ID_FILE",
    "ReadOnlyStore",
    "SchemaError",
    "StorageFullError",
    "Store",
    "StoreError",
    "now",
]
