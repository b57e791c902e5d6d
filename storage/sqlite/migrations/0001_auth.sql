-- Wallet login, API keys and releases.
-- Times are Unix microseconds (UTC); NULL means "never" for nullable ones.
-- Key hashes are SHA-256 digests; the keys themselves are never stored.

-- Login challenges. used_at is set once, atomically, when a nonce is consumed.
CREATE TABLE nonces (
    value      TEXT    PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;

CREATE INDEX nonces_expires_at ON nonces (expires_at);

-- Each wallet's single master key; a new login replaces the row.
CREATE TABLE master_keys (
    address    TEXT    PRIMARY KEY,
    hash       BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

-- Client keys. Revoked keys keep their row (and their hash stays unique).
CREATE TABLE client_keys (
    id           TEXT    PRIMARY KEY,
    address      TEXT    NOT NULL,
    hash         BLOB    NOT NULL UNIQUE,
    prefix       TEXT    NOT NULL,
    label        TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT;

CREATE INDEX client_keys_address ON client_keys (address, created_at, id);

-- Published versions. downloads is a JSON array of URLs; published_at is
-- Unix seconds, as in release.Release.
CREATE TABLE releases (
    version      TEXT    PRIMARY KEY,
    notes        TEXT    NOT NULL,
    downloads    TEXT    NOT NULL,
    published_at INTEGER NOT NULL
) STRICT;
