"""PostgreSQL access for the reference service: schema migrations, row-level security, the
connection pool and the row helpers every domain module uses."""
