-- pgvector. A no-op when the extension already exists (then no superuser is needed: on RDS an
-- administrator runs CREATE EXTENSION vector once, or grants rds_superuser to the migrating role).
CREATE EXTENSION IF NOT EXISTS vector;
