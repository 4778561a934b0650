// Read after write, across functions: a writer function appends ledger entries, and a reader function, deployed
// separately, reports an account's balance. Whatever the writer has committed, the reader sees, even on a warm
// instance that has served many invocations before.
//
// The trap this avoids (test/read-after-write.test.ts shows it happen): a MySQL connection created at module scope
// lives as long as the execution environment. If one invocation throws between BEGIN and COMMIT, its transaction
// stays open on that connection, and InnoDB keeps serving every later query on it from the same REPEATABLE READ
// snapshot: the reader keeps answering with old balances, for as long as the instance lives. Here the connection
// belongs to one invocation (scoped mode), or is reset before it goes back to the warm pool (pool mode): no
// transaction and no snapshot outlives the invocation that made it.

import middy from "@middy/core";
import { mysqlConnection } from "@middy-conn/mysql";
import type { Connection, ResultSetHeader, RowDataPacket } from "mysql2/promise";

const required = (name: string): string => {
	const value = process.env[name];
	if (!value) throw new Error(`environment variable ${name} is not set`);
	return value;
};

/** The database settings shared by both functions; each function has its own user (see template.yaml). */
const databaseConfig = () => ({
	host: required("DB_HOST"),
	port: Number(process.env.DB_PORT ?? 3306),
	user: required("DB_USER"),
	password: required("DB_PASSWORD"),
	database: required("DB_NAME"),
	...(process.env.DB_TLS === "rds" ? { ssl: "rds" as const } : {}),
});

/** An error in the event itself: retrying the same event cannot succeed. */
class InvalidEvent extends Error {
	override name = "InvalidEvent";
}

class AccountNotFound extends Error {
	override name = "AccountNotFound";
}

const accountIdOf = (event: unknown): string => {
	const accountId = (event as { accountId?: unknown } | null)?.accountId;
	if (typeof accountId !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(accountId)) {
		throw new InvalidEvent("accountId must be 1 to 64 letters, digits, '-' or '_'");
	}
	return accountId;
};

export interface WriteEvent {
	accountId: string;
	amountCents: number;
}

// Middy's early timeout fires 250 ms before Lambda's: time for the middlewares to stop what the handler left
// running (@middy-conn/mysql KILLs a statement still running on the server, over a new connection) and answer.
const middyOptions = { timeoutEarlyInMillis: 250 };

/** Appends one entry; the insert is committed (autocommit) before the invocation returns. */
export const writer = middy<WriteEvent, { entryId: number }>(middyOptions)
	.use(mysqlConnection({ config: databaseConfig() }))
	.handler(async (event, context) => {
		const accountId = accountIdOf(event);
		const { amountCents } = event;
		if (!Number.isSafeInteger(amountCents) || amountCents === 0) {
			throw new InvalidEvent("amountCents must be a non-zero integer");
		}
		const [inserted] = await context.db.query<ResultSetHeader>(
			"INSERT INTO ledger_entries (account_id, amount_cents) VALUES (?, ?)",
			[accountId, amountCents],
		);
		return { entryId: inserted.insertId };
	});

export interface ReadEvent {
	accountId: string;
	/** Also list the latest entries, read in the same transaction as the balance so that both agree. */
	statement?: boolean;
}

export interface AccountView {
	accountId: string;
	balanceCents: number;
	entries: number;
	lastEntryId: number | null;
	latest?: Array<{ id: number; amountCents: number }>;
}

/** What the reader needs of a connection; mysql2's promise connection and `context.db` both have it. */
export type Queryable = Pick<Connection, "query" | "beginTransaction" | "commit">;

/**
 * The reader's logic, on whatever connection it is given. The test runs this very function on a module-level
 * connection to show the stale read that the middleware prevents.
 */
export const readAccount = async (db: Queryable, event: ReadEvent): Promise<AccountView> => {
	const accountId = accountIdOf(event);
	if (event.statement) await db.beginTransaction();
	const [rows] = await db.query<RowDataPacket[]>(
		"SELECT COUNT(*) AS entries, COALESCE(SUM(amount_cents), 0) AS balance, MAX(id) AS lastEntryId FROM ledger_entries WHERE account_id = ?",
		[accountId],
	);
	const summary = rows[0] as { entries: number; balance: string | number; lastEntryId: number | null };
	// Thrown inside the transaction on purpose: an ordinary "not found" is exactly how real handlers leave a
	// transaction open on a connection that outlives them. The middleware ends it; a module-level connection keeps it.
	if (Number(summary.entries) === 0) throw new AccountNotFound(`account ${accountId} has no entries`);
	const view: AccountView = {
		accountId,
		balanceCents: Number(summary.balance),
		entries: Number(summary.entries),
		lastEntryId: summary.lastEntryId,
	};
	if (event.statement) {
		const [latest] = await db.query<RowDataPacket[]>(
			"SELECT id, amount_cents AS amountCents FROM ledger_entries WHERE account_id = ? ORDER BY id DESC LIMIT 10",
			[accountId],
		);
		view.latest = latest.map((row) => ({ id: Number(row.id), amountCents: Number(row.amountCents) }));
		await db.commit();
	}
	return view;
};

/**
 * The reader. DB_MODE=pool keeps a small warm pool per execution environment (each connection is reset before
 * it is reused); the default opens one connection per invocation.
 */
const readerMode = process.env.DB_MODE === "pool" ? "pool" : "scoped";

export const reader = middy<ReadEvent, AccountView>(middyOptions)
	.use(
		mysqlConnection({
			mode: readerMode,
			// A reader instance runs one invocation at a time: two connections leave room for a slow close.
			config: { ...databaseConfig(), ...(readerMode === "pool" ? { connectionLimit: 2 } : {}) },
		}),
	)
	.handler(async (event, context) => readAccount(context.db, event));
