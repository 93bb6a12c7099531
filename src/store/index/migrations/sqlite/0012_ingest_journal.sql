-- The ingest journal as the index's redo log (issue 16 section 5, `store::journal`): the
-- group commit of the fronts' ingest commits its index rows without waiting for the
-- database's flush (SQLite `synchronous=NORMAL`, PostgreSQL `synchronous_commit = off`) once
-- the journal records of the instances are durable. Each such transaction writes here the
-- sequence number of the last journal record it covers. A power loss can only take a suffix
-- of the committed transactions (SQLite's WAL and PostgreSQL's WAL are logs), so at start
-- every journal record with a higher number than `indexed_seq` is one whose index rows were
-- lost (or never written): it is indexed again from the journal's bytes. Records with a
-- number up to `indexed_seq` were indexed, then perhaps replaced or deleted: left alone.
-- One row per journal (`journal`: the id in `data_dir/journal/ingest.id`), so several nodes
-- with their own data directories can share one database.
CREATE TABLE ingest_journal (
    journal     TEXT PRIMARY KEY,
    indexed_seq BIGINT NOT NULL,
    -- Bumped by the writes whose only purpose is to be durable (a commit that changes
    -- nothing writes nothing, and flushes nothing).
    syncs       BIGINT NOT NULL DEFAULT 0
);
