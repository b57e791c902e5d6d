-- Personas (package personas): personas, their sessions (each with the
-- lease of the worker generating its replies), messages in the order
-- they were written (seq), and workspace files.
CREATE TABLE personas (
    id             TEXT NOT NULL PRIMARY KEY,
    account        TEXT NOT NULL,
    personality_id TEXT NOT NULL,
    name           TEXT NOT NULL,
    created_at     {{.BigInt}} NOT NULL
){{.Strict}};
CREATE INDEX personas_account ON personas (account, created_at, id);
CREATE TABLE persona_sessions (
    id          TEXT NOT NULL PRIMARY KEY,
    persona_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  {{.BigInt}} NOT NULL,
    lease_until {{.BigInt}} NOT NULL DEFAULT 0
){{.Strict}};
CREATE INDEX persona_sessions_persona ON persona_sessions (persona_id, created_at, id);
CREATE TABLE persona_messages (
    seq        {{.Serial}} PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at {{.BigInt}} NOT NULL
){{.Strict}};
CREATE INDEX persona_messages_session ON persona_messages (session_id, seq);
CREATE INDEX persona_messages_pending ON persona_messages (session_id, seq) WHERE status = 'pending';
CREATE TABLE persona_files (
    persona_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    content    TEXT NOT NULL,
    updated_at {{.BigInt}} NOT NULL,
    PRIMARY KEY (persona_id, name)
){{.Strict}};
