-- The least SQL one fill of a buy can cost on PostgreSQL, one transaction:
-- lock the account (reading its cash and its audit chain's head), upsert the
-- holding, write cash and the chain's new head, insert the fill and the
-- ledger row, append one audit row. Every client fills into the same
-- account, as in the one-account order scenario. This is the raw-SQL limit
-- one-account fills are measured against.
-- Run with `pgbench -M extended -D user_id=… -D account_id=…`.
\set price 100
BEGIN;
SELECT cash, reserved_cash, audit_sequence, audit_hash FROM accounts WHERE id = :account_id FOR UPDATE;
INSERT INTO holdings (id, account_id, user_id, symbol, quantity, reserved_quantity, cost_basis, created_at, updated_at)
    VALUES (gen_random_uuid(), :account_id, :user_id, 'BENCH', 1, 0, :price, now(), now())
    ON CONFLICT (account_id, symbol) DO UPDATE SET quantity = holdings.quantity + 1, cost_basis = holdings.cost_basis + :price, updated_at = now();
UPDATE accounts SET cash = cash - :price, updated_at = now(),
    audit_sequence = COALESCE(audit_sequence, 0) + 1, audit_hash = md5(random()::text), audit_mac = md5(random()::text)
    WHERE id = :account_id RETURNING audit_sequence \gset chain_
INSERT INTO fills (id, order_id, user_id, broker_fill_id, quantity, price, occurred_at)
    VALUES (gen_random_uuid(), (SELECT id FROM orders WHERE account_id = :account_id LIMIT 1), :user_id, gen_random_uuid()::text, 1, :price, now());
INSERT INTO transactions (id, account_id, user_id, type, symbol, quantity, price, amount, order_id, description, occurred_at, created_at)
    VALUES (gen_random_uuid(), :account_id, :user_id, 'buy', 'BENCH', 1, :price, (0 - :price), NULL, 'buy 1 BENCH', now(), now());
INSERT INTO audit_events (id, occurred_at, action, subject_type, subject_id, user_id, details, previous_hash, hash, chain_id, chain_sequence)
    VALUES (gen_random_uuid(), now(), 'order.fill', 'order', :account_id, :user_id, '{}', md5(random()::text), md5(random()::text),
            'account:' || :account_id::text, :chain_audit_sequence + 1000000000);
COMMIT;
