-- The least SQL one GET /api/portfolio can cost on PostgreSQL: one identity
-- lookup (session, user and default account in one statement) and the
-- account's cash with its holdings in one join. Quotes come from memory.
-- This is the raw-SQL limit the portfolio read is measured against (not a
-- capture of what the server happens to send).
-- Run with `pgbench -M extended -D session_id=… -D user_id=…`.
SELECT s.id AS session_id, s.user_id, s.last_used_at, s.expires_at, s.revoked_at,
       u.email, u.role, u.email_verified_at, u.disabled_at, u.totp_enabled_at, u.created_at,
       (SELECT a.id FROM accounts a WHERE a.user_id = s.user_id ORDER BY a.created_at, a.id LIMIT 1) AS account_id
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.id = :session_id AND s.user_id = :user_id \gset identity_
SELECT a.cash, a.reserved_cash, h.symbol, h.quantity, h.reserved_quantity, h.cost_basis
FROM accounts a LEFT JOIN holdings h ON h.account_id = a.id
WHERE a.id = :identity_account_id AND a.user_id = :user_id;
