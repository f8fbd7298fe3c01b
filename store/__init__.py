"""The store: the embedded metadata database (SQLite under the pycri root) and the table of typed
records the domains build on (table.py). Each domain keeps its records and schema steps in its own
records.py."""
