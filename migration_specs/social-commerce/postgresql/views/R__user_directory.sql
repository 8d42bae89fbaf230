-- Public profile listing with follower counts; re-created whenever this file changes.
CREATE OR REPLACE VIEW user_directory AS
SELECT u.id,
       u.full_name,
       u.created_at,
       (SELECT count(*) FROM follows f WHERE f.followee_id = u.id) AS followers,
       (SELECT count(*) FROM follows f WHERE f.follower_id = u.id) AS following
  FROM users u;
