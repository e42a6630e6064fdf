-- The statements one GET /api/portfolio issues on PostgreSQL (captured with
-- LOG_LEVEL=trace): the session and the user behind the bearer token, the
-- account, its holdings. Quotes come from the memory cache. Run with
-- `pgbench -M extended -D session_id=… -D user_id=…`.
SELECT id, user_id, kind, created_at, last_used_at, expires_at, revoked_at, revoke_reason, ip, user_agent FROM sessions WHERE id = :session_id LIMIT 1;
SELECT id, email, password_hash, role, email_verified_at, disabled_at, totp_secret_sealed, totp_enabled_at, failed_login_count, locked_until, password_changed_at, created_at, updated_at FROM users WHERE id = :user_id LIMIT 1;
SELECT id, user_id, name, kind, currency, cash, reserved_cash, created_at, updated_at FROM accounts WHERE user_id = :user_id ORDER BY created_at ASC LIMIT 1;
SELECT id, account_id, user_id, symbol, quantity, reserved_quantity, cost_basis, created_at, updated_at FROM holdings WHERE account_id = :account_id;
