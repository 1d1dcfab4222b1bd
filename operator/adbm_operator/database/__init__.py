"""Database provisioning for a BackendService, as the admin the spec names.

The reconcile's interface is small:
- `target.admin_server(secret_data, key)`: the server from the admin Secret (CloudNativePG's
  `<cluster>-superuser` works as is), or `AdminSecretError`;
- `provision.provision(server, desired)` -> `Report`: database and app role created or repaired,
  RLS planned, applied and re-read, isolation proven; `report.condition()` is DatabaseReady's
  (status, reason, message) and `report.event()` the Event for what it changed;
- `provision.desired_from_spec(obj, app_password=..., migrated=...)` builds `desired`, and
  `provision.retry_delay(failures)` spaces out retries while Unreachable;
- `children.secrets(obj, server, password)` and `children.migration_job(obj)`: the objects the
  reconcile applies first (pure; built by `specs.dbsecrets` and `specs.migration`);
- `deletion.deprovision(...)` for deletion policy `Delete`.

Row-level security itself is `reference_service.db.rls`, shared with the service's own
`migrate`, so both always mean the same policies.
"""
