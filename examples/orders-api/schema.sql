-- Orders API schema (MySQL 8 / MariaDB 10.6+ / Aurora MySQL). Apply once, as the database's owner:
--   mysql -h <host> -u <admin> -p <database> < schema.sql

CREATE TABLE IF NOT EXISTS orders (
	id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
	customer_id VARCHAR(64) NOT NULL,
	currency CHAR(3) NOT NULL,
	total_cents BIGINT UNSIGNED NOT NULL,
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	PRIMARY KEY (id),
	KEY orders_by_customer (customer_id, created_at)
) ENGINE = InnoDB;

-- An order's lines are written in the same transaction as the order: an order is never seen without them.
CREATE TABLE IF NOT EXISTS order_lines (
	order_id BIGINT UNSIGNED NOT NULL,
	line_no SMALLINT UNSIGNED NOT NULL,
	sku VARCHAR(64) NOT NULL,
	quantity INT UNSIGNED NOT NULL,
	unit_price_cents BIGINT UNSIGNED NOT NULL,
	PRIMARY KEY (order_id, line_no),
	CONSTRAINT order_lines_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE
) ENGINE = InnoDB;
