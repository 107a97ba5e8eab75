-- Placeholders so that readers get an empty answer, not an error, before the first load.
-- The dimension comes from the data: `batch embeddings` builds item_emb / user_emb with
-- vector(D), a primary key and the HNSW indexes in staging tables and renames them into place,
-- replacing these placeholders (which have an undimensioned vector column and no HNSW index).
CREATE TABLE IF NOT EXISTS item_emb (
    id        varchar PRIMARY KEY,
    embedding vector  NOT NULL
);

CREATE TABLE IF NOT EXISTS user_emb (
    id        integer PRIMARY KEY,
    embedding vector  NOT NULL
);
