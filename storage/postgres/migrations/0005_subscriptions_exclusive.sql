-- An exclusive subscription holds its (kind, resource) for one account at
-- a time: a reserved subdomain. The partial unique index decides two
-- accounts racing for one, in any process; the losing transaction, first
-- charge included, rolls back.
ALTER TABLE subscriptions ADD COLUMN exclusive BOOLEAN NOT NULL DEFAULT false;
CREATE UNIQUE INDEX subscriptions_exclusive ON subscriptions (kind, resource) WHERE status = 'Active' AND exclusive;
