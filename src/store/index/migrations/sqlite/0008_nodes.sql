-- Several nodes on one database (issue 16, item 2): token identities seen by any node, so that
-- a JWT `jti` or a SAML assertion ID replayed at another node is refused (RFC 7519 4.1.7,
-- SAML core 1.3.4). A row is kept until its token expires (plus leeway), then replaced or
-- purged.
CREATE TABLE token_replay (
    issuer       TEXT NOT NULL,
    token_id     TEXT NOT NULL,
    forget_after BIGINT NOT NULL,
    PRIMARY KEY (issuer, token_id)
);
CREATE INDEX token_replay_forget_idx ON token_replay (forget_after);

-- Leases one node holds for a while (issue 16, item 2): e.g. `fetch:<study>` while it
-- retrieves a study from the PACS, so that the other nodes wait for it instead of
-- retrieving the same study again. A lease past `until_at` is free for anyone.
CREATE TABLE node_lease (
    name     TEXT PRIMARY KEY,
    owner    TEXT NOT NULL,
    until_at BIGINT NOT NULL
);
