-- The statements one market order costs on PostgreSQL from request to fill
-- (captured with LOG_LEVEL=trace): POST /api/orders (session, user, account
-- lock, reservation, order, job, audit event), the worker's claim, the fill
-- transaction (order, account lock, fill, holding, cash, ledger row, status
-- changes, three audit events) and the job's completion. Quotes come from
-- memory. Run with `pgbench -M extended -D session_id=… -D user_id=… -D account_id=…`.
\set price 100
SELECT id, user_id, kind, created_at, last_used_at, expires_at, revoked_at FROM sessions WHERE id = :session_id LIMIT 1;
SELECT id, email, role, email_verified_at, disabled_at, created_at FROM users WHERE id = :user_id LIMIT 1;
BEGIN;
SELECT id FROM accounts WHERE id = :account_id AND user_id = :user_id FOR UPDATE;
SELECT id, user_id, cash, reserved_cash FROM accounts WHERE id = :account_id LIMIT 1;
UPDATE accounts SET reserved_cash = reserved_cash + 105, updated_at = now() WHERE id = :account_id;
INSERT INTO orders (id, user_id, account_id, client_order_id, symbol, side, type, time_in_force, quantity, notional, limit_price, stop_price, status, filled_quantity, reserved_cash, reserved_quantity, created_at, updated_at)
    VALUES (gen_random_uuid(), :user_id, :account_id, NULL, 'BENCH', 'BUY', 'MARKET', 'DAY', 1, NULL, NULL, NULL, 'new', 0, 105, 0, now(), now()) RETURNING id \gset order_
INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at, created_at, updated_at)
    VALUES (gen_random_uuid(), 'bench_submit', '{}', 'queued', 0, 8, now(), now(), now()) RETURNING id \gset job_
SELECT pg_advisory_xact_lock(7220101);
SELECT sequence + 1 AS next FROM audit_events ORDER BY sequence DESC LIMIT 1 \gset audit_
INSERT INTO audit_events (id, occurred_at, actor_id, action, subject_type, subject_id, user_id, details, ip, request_id, sequence, previous_hash, hash)
    VALUES (gen_random_uuid(), now(), :user_id, 'order.placed', 'order', :order_id, :user_id, '{}', '127.0.0.1', 'bench', :audit_next, md5(random()::text), md5(random()::text));
COMMIT;
UPDATE jobs SET status = 'running', locked_by = 'bench', locked_until = now() + interval '60 seconds', attempts = attempts + 1, updated_at = now()
    WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND kind = 'bench_submit' AND run_at <= now() ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id;
SELECT id, kind, payload, status, attempts FROM jobs WHERE id = :job_id LIMIT 1;
SELECT id, user_id, account_id, symbol, side, type, status, quantity, filled_quantity FROM orders WHERE id = :order_id LIMIT 1;
BEGIN;
SELECT id, account_id, status FROM orders WHERE id = :order_id LIMIT 1;
SELECT id FROM accounts WHERE id = :account_id AND user_id = :user_id FOR UPDATE;
SELECT id, cash, reserved_cash FROM accounts WHERE id = :account_id LIMIT 1;
SELECT id, status, filled_quantity, reserved_cash FROM orders WHERE id = :order_id LIMIT 1;
SELECT id FROM fills WHERE broker_fill_id = :order_id::text LIMIT 1;
SELECT id, quantity, cost_basis FROM holdings WHERE account_id = :account_id AND symbol = 'BENCH' LIMIT 1;
UPDATE holdings SET quantity = quantity + 1, cost_basis = cost_basis + :price, updated_at = now() WHERE account_id = :account_id AND symbol = 'BENCH';
INSERT INTO transactions (id, account_id, user_id, type, symbol, quantity, price, amount, order_id, description, occurred_at, created_at)
    VALUES (gen_random_uuid(), :account_id, :user_id, 'buy', 'BENCH', 1, :price, (0 - :price), :order_id, 'buy 1 BENCH', now(), now());
UPDATE accounts SET cash = cash - :price, reserved_cash = reserved_cash - 105, updated_at = now() WHERE id = :account_id;
INSERT INTO fills (id, order_id, user_id, broker_fill_id, quantity, price, occurred_at) VALUES (gen_random_uuid(), :order_id, :user_id, :order_id::text, 1, :price, now());
UPDATE orders SET status = 'accepted', updated_at = now() WHERE id = :order_id;
SELECT pg_advisory_xact_lock(7220101);
SELECT sequence + 1 AS next FROM audit_events ORDER BY sequence DESC LIMIT 1 \gset audit_
INSERT INTO audit_events (id, occurred_at, action, subject_type, subject_id, user_id, details, sequence, previous_hash, hash)
    VALUES (gen_random_uuid(), now(), 'order.accepted', 'order', :order_id, :user_id, '{}', :audit_next, md5(random()::text), md5(random()::text));
UPDATE orders SET status = 'filled', filled_quantity = 1, average_fill_price = :price, reserved_cash = 0, updated_at = now() WHERE id = :order_id;
SELECT sequence + 1 AS next FROM audit_events ORDER BY sequence DESC LIMIT 1 \gset audit_
INSERT INTO audit_events (id, occurred_at, action, subject_type, subject_id, user_id, details, sequence, previous_hash, hash)
    VALUES (gen_random_uuid(), now(), 'order.filled', 'order', :order_id, :user_id, '{}', :audit_next, md5(random()::text), md5(random()::text));
SELECT sequence + 1 AS next FROM audit_events ORDER BY sequence DESC LIMIT 1 \gset audit_
INSERT INTO audit_events (id, occurred_at, action, subject_type, subject_id, user_id, details, sequence, previous_hash, hash)
    VALUES (gen_random_uuid(), now(), 'order.fill', 'order', :order_id, :user_id, '{}', :audit_next, md5(random()::text), md5(random()::text));
COMMIT;
UPDATE jobs SET status = 'done', locked_by = NULL, locked_until = NULL, updated_at = now() WHERE id = :job_id AND locked_by = 'bench';
