"""Migration files, `NNNN_name.sql`, applied in name order by `reference_service.db.migrate`."""
