-- Billing: the credit ledger, holds, reward points and subscriptions.
-- Money is INTEGER micro-cents; times are INTEGER Unix microseconds (UTC).
-- The invariants live here as well as in the statements that write:
-- CHECK keeps an account's available balance (balance - held) from going
-- negative, and unique indexes make idempotency keys, on-chain payments
-- and subscription periods apply once.

CREATE TABLE accounts (
    address TEXT PRIMARY KEY,
    balance INTEGER NOT NULL DEFAULT 0,
    held    INTEGER NOT NULL DEFAULT 0,
    CHECK (held >= 0),
    CHECK (balance - held >= 0)
) STRICT;

CREATE TABLE entries (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    account         TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    amount          INTEGER NOT NULL,
    balance_after   INTEGER NOT NULL CHECK (balance_after >= 0),
    description     TEXT    NOT NULL DEFAULT '',
    chain_id        INTEGER NOT NULL DEFAULT 0,
    tx_hash         TEXT,
    model           TEXT,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    fingerprint     TEXT,
    created_at      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX entries_idem_key ON entries (account, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX entries_chain_tx ON entries (chain_id, tx_hash) WHERE tx_hash IS NOT NULL;
CREATE INDEX entries_account_created ON entries (account, created_at, seq);
CREATE INDEX entries_account_type ON entries (account, type, status);

CREATE TABLE holds (
    id              TEXT    PRIMARY KEY,
    account         TEXT    NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    status          TEXT    NOT NULL CHECK (status IN ('open', 'settled', 'released')),
    settled_amount  INTEGER,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    resolved_at     INTEGER,
    idempotency_key TEXT,
    fingerprint     TEXT
) STRICT;
CREATE UNIQUE INDEX holds_idem_key ON holds (account, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX holds_open_expiry ON holds (expires_at) WHERE status = 'open';

CREATE TABLE points (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    account         TEXT    NOT NULL,
    trigger_type    TEXT    NOT NULL,
    points          INTEGER NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    metadata        TEXT,
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX points_idem_key ON points (account, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX points_account_created ON points (account, created_at, seq);

CREATE TABLE subscriptions (
    seq           INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    account       TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    resource      TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    hourly_cost   INTEGER NOT NULL CHECK (hourly_cost > 0),
    anchor        INTEGER NOT NULL,
    prepaid_until INTEGER NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('Active', 'Inactive', 'Cancelled')),
    created_at    INTEGER NOT NULL,
    ended_at      INTEGER
) STRICT;
CREATE UNIQUE INDEX subscriptions_active ON subscriptions (account, kind, resource) WHERE status = 'Active';
CREATE INDEX subscriptions_due ON subscriptions (prepaid_until, seq) WHERE status = 'Active';
CREATE INDEX subscriptions_account ON subscriptions (account, created_at, seq);

CREATE TABLE subscription_periods (
    subscription_id TEXT    NOT NULL,
    period_start    INTEGER NOT NULL,
    entry_id        TEXT    NOT NULL,
    PRIMARY KEY (subscription_id, period_start)
) STRICT;
CREATE INDEX subscription_periods_entry ON subscription_periods (entry_id);
