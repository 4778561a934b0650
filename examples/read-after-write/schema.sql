-- Read-after-write example schema (MySQL 8 / MariaDB 10.6+ / Aurora MySQL). Apply once, as the database's owner:
--   mysql -h <host> -u <admin> -p <database> < schema.sql

-- An append-only ledger: the writer adds entries, the reader sums them.
CREATE TABLE IF NOT EXISTS ledger_entries (
	id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
	account_id VARCHAR(64) NOT NULL,
	amount_cents BIGINT NOT NULL,
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	PRIMARY KEY (id),
	KEY entries_by_account (account_id, id)
) ENGINE = InnoDB;

-- The reader needs nothing but SELECT (see README.md):
--   CREATE USER 'ledger_reader'@'%' IDENTIFIED BY '...';
--   GRANT SELECT ON <database>.* TO 'ledger_reader'@'%';
