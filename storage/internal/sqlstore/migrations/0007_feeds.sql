-- The news feed (package feeds): every raw item ID seen (so a deleted or
-- expired item never comes back), the queue of items waiting for
-- enrichment (leased by due_at), and the enriched items.
CREATE TABLE feed_seen (
    id      TEXT NOT NULL PRIMARY KEY,
    seen_at {{.BigInt}} NOT NULL
){{.Strict}};
CREATE INDEX feed_seen_at ON feed_seen (seen_at);
CREATE TABLE feed_queue (
    id       TEXT NOT NULL PRIMARY KEY,
    raw      TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at   {{.BigInt}} NOT NULL
){{.Strict}};
CREATE INDEX feed_queue_due ON feed_queue (due_at, id);
CREATE TABLE feed_items (
    id        TEXT NOT NULL PRIMARY KEY,
    published {{.BigInt}} NOT NULL,
    category  TEXT NOT NULL,
    headline  TEXT NOT NULL,
    summary   TEXT NOT NULL,
    source    TEXT NOT NULL,
    link      TEXT NOT NULL
){{.Strict}};
CREATE INDEX feed_items_published ON feed_items (published, id);
CREATE INDEX feed_items_category ON feed_items (category, published, id);
