-- polymigrate: transactional=false, statement_timeout=60min
-- Backfill in batches of 5000 rows, committing each batch, so no long transaction holds row locks
-- or bloats the table; safe to re-run after an interruption (it only touches rows still NULL).
-- Rows without any name get '' so the contract step can make the column NOT NULL.
-- polymigrate:lint-ignore commit-inside-do-block reason: every batch selects only rows whose full_name is still NULL, so re-running the block from its start skips what committed
DO $$
DECLARE
    touched integer;
BEGIN
    LOOP
        UPDATE users
           SET full_name = concat_ws(' ', first_name, last_name)
         WHERE id IN (SELECT id FROM users WHERE full_name IS NULL ORDER BY id LIMIT 5000);
        GET DIAGNOSTICS touched = ROW_COUNT;
        EXIT WHEN touched = 0;
        COMMIT;
    END LOOP;
END
$$;
