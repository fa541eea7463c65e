"""The DuckDB results file: schema (named migrations), writes, exports, and the SQL views
that define kind, role, length and warm/cold once.
"""
