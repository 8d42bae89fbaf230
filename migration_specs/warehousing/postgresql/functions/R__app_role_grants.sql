-- Re-runs when edited; the role name comes from the environment (placeholders.app_role).
CALL common.grant_app_access('${app_role}');
