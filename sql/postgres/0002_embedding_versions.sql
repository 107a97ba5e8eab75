-- One row per embeddings version loaded by `recstream batch embeddings`.
-- state: live (served, tables item_emb / user_emb), previous (kept for --rollback, tables
-- item_emb_previous / user_emb_previous), retired (tables dropped, kept for history).
CREATE TABLE IF NOT EXISTS embedding_versions (
    id           bigserial   PRIMARY KEY,
    version      text        NOT NULL,
    item_source  text        NOT NULL,
    item_sha256  text        NOT NULL CHECK (item_sha256 ~ '^[0-9a-f]{64}$'),
    item_rows    integer     NOT NULL CHECK (item_rows > 0),
    user_source  text        NOT NULL,
    user_sha256  text        NOT NULL CHECK (user_sha256 ~ '^[0-9a-f]{64}$'),
    user_rows    integer     NOT NULL CHECK (user_rows > 0),
    dimension    integer     NOT NULL CHECK (dimension BETWEEN 1 AND 2000),
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    state        text        NOT NULL CHECK (state IN ('live', 'previous', 'retired'))
);

-- At most one live and one previous version.
CREATE UNIQUE INDEX IF NOT EXISTS embedding_versions_one_live ON embedding_versions (state) WHERE state = 'live';
CREATE UNIQUE INDEX IF NOT EXISTS embedding_versions_one_previous ON embedding_versions (state) WHERE state = 'previous';
