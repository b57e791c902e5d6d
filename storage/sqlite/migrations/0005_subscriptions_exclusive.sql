-- An exclusive subscription holds its (kind, resource) for one account at
-- a time: a reserved subdomain. The partial unique index decides two
-- accounts racing for one; the losing transaction, first charge included,
-- rolls back.
ALTER TABLE subscriptions ADD COLUMN exclusive INTEGER NOT NULL DEFAULT 0 CHECK (exclusive IN (0, 1));
CREATE UNIQUE INDEX subscriptions_exclusive ON subscriptions (kind, resource) WHERE status = 'Active' AND exclusive = 1;
