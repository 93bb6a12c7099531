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
