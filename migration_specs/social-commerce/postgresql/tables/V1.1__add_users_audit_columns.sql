-- created_at already exists from V1; the helper adds updated_at and its trigger.
CALL common.add_audit_columns('users');
