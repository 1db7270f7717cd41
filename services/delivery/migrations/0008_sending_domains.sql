-- DKIM sending domains (services/delivery/dkim.py): a user's domain, the selector its DNS record lives
-- under and the key pair Herald generated. One key per user and domain; two users may name the same
-- domain (only the one who publishes the record gets signatures that verify). The private key is
-- sealed (AES-256-GCM under a key derived from the token secret, bound to owner and domain): no RPC
-- returns it, and a copy of the table alone does not reveal it.
CREATE TABLE sending_domains (
    owner_user_id      bigint      NOT NULL,
    -- Lower-case IDNA A-labels, no trailing dot.
    domain             text        NOT NULL CHECK (domain = lower(domain) AND length(domain) <= 253),
    selector           text        NOT NULL CHECK (selector = lower(selector) AND selector <> ''),
    -- Version byte, nonce, ciphertext and tag of the PEM private key (PKCS#1, RSA 2048).
    sealed_private_key bytea       NOT NULL,
    -- Base64 of the DER SubjectPublicKeyInfo: the p= of the TXT record.
    public_key         text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_user_id, domain)
);
