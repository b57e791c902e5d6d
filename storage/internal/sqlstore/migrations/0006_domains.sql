-- Reserved subdomains (package tunnel). A domain's id is the id of the
-- exclusive subscription paying for it, whose status says whether the
-- domain is active; a port is unique among one account's domains that
-- hold one (a released domain's port is cleared in its transaction, a
-- lapsed one's when the port is next assigned).
CREATE TABLE domains (
    id           TEXT    NOT NULL PRIMARY KEY,
    account      TEXT    NOT NULL,
    subdomain    TEXT    NOT NULL,
    local_port   INTEGER CHECK (local_port > 0 AND local_port < 65536),
    port_version {{.BigInt}} NOT NULL DEFAULT 0,
    created_at   {{.BigInt}} NOT NULL
){{.Strict}};
CREATE UNIQUE INDEX domains_account_port ON domains (account, local_port) WHERE local_port IS NOT NULL;
CREATE INDEX domains_account_created ON domains (account, created_at, id);
