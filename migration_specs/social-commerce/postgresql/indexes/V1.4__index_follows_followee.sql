-- polymigrate: transactional=false, lock_timeout=5s
-- "Who follows me" reads by followee; CONCURRENTLY keeps follows writable while the index builds,
-- and cannot run inside a transaction, hence the directive above.
CREATE INDEX CONCURRENTLY IF NOT EXISTS follows_followee_idx ON follows (followee_id, created_at DESC);
