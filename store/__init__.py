"""The embedded metadata store (SQLite under the pycri root). Domains register their own schema."""
