// Use: `context.db`, the connection of one invocation.
//
// Created in `before` and cheap (no I/O): the connection is opened (scoped) or acquired (pool) by the first
// statement, and every statement issued while that happens waits on the same connect (acquire.ts). It is a
// resource of the invocation (@middy-conn/lifecycle) from `before` on, so that whichever path ends the
// invocation closes it (close.ts), even when a background task used it for the first time during teardown. Once
// closed it refuses new statements rather than open a connection that nothing would close.
//
// Everything here lives on the request, never in module scope: with Lambda Managed Instances several invocations
// run at once in one process, and each must get its own connection.
import type { Request } from "@middy/core";
import {
	type Invocation,
	type InvocationEnd,
	type InvocationResource,
	MiddyConnError,
	remainingTimeInMillis,
} from "@middy-conn/lifecycle";
import type { Connection, FieldPacket, QueryResult } from "mysql2/promise";
import { type AcquireContext, acquire, connect, type Lease, type Shared } from "./acquire.ts";
import { killSession } from "./cancel.ts";
import { type Closing, closeLease, isAnswered } from "./close.ts";
import {
	closedError,
	connectionLostError,
	destroyedError,
	endedWhileConnectingError,
	interruptedError,
	managedTransactionError,
	unfinishedError,
} from "./errors.ts";
import {
	commandInFlight,
	destroyHard,
	failCommandInFlight,
	isDead,
	isFatal,
	releaseConnection,
} from "./mysql2-adapter.ts";
import { pkg } from "./options.ts";
import { type MysqlConnectionStats, newStats, reportMysqlStats } from "./telemetry.ts";

export type { Shared } from "./acquire.ts";

/**
 * The invocation's database: mysql2/promise's `query`, `execute` and transaction methods, with their signatures
 * and return shapes (`[rows, fields]`), bound to this invocation's connection.
 */
export interface InvocationDb {
	query: Connection["query"];
	execute: Connection["execute"];
	/** Starts a transaction (not with the `transaction` option, which manages it). */
	beginTransaction(): Promise<void>;
	commit(): Promise<void>;
	rollback(): Promise<void>;
	/**
	 * The raw mysql2/promise connection of this invocation, connected (and inside the managed transaction, if
	 * any), for what the methods above do not cover: `prepare`, `format`, streaming from `.connection`. It stays
	 * the middleware's: do not `end`, `release` or `destroy` it, and do not keep it beyond the invocation (a
	 * streamed response body may read from it until the body ends).
	 */
	connection(): Promise<Connection>;
}

export class InvocationConnection implements InvocationResource {
	readonly name = pkg;
	readonly #shared: Shared;
	readonly #invocation: Invocation;
	readonly #request: Request;
	readonly #stats: MysqlConnectionStats;
	/** Open for statements until teardown closes it. */
	#state: "open" | "closing" | "closed" = "open";
	/** The connect (scoped) or acquire (pool), shared by every statement that comes before it completes. */
	#lease: Promise<Lease> | undefined;
	#current: Lease | undefined;
	#abort: AbortController | undefined;
	/** The connection died (or was given up) during this invocation: later statements fail with this at once. */
	#lost: MiddyConnError | undefined;
	/** A transaction is open on the connection (begun by the middleware or by the handler). */
	#tx: "none" | "open" = "none";
	/** The middleware's BEGIN for the current transaction, shared by the statements that wait on it. */
	#begin: Promise<void> | undefined;
	#begun = false;
	/** Statements (and the connect) issued and not yet settled. */
	#inFlight = 0;
	#gaveUp = false;
	/** The text of the last statement sent through query/execute (undefined for the raw connection's). */
	#lastSql: string | undefined;
	/** The KILL of a statement left running on the server (cancel.ts); teardown waits for it. */
	#kill: Promise<boolean> | undefined;
	#reported = false;

	/** `context.db`. */
	readonly db: InvocationDb;

	constructor(shared: Shared, invocation: Invocation, request: Request) {
		this.#shared = shared;
		this.#invocation = invocation;
		this.#request = request;
		this.#stats = newStats(shared.settings.mode);
		this.db = {
			query: this.#query as InvocationDb["query"],
			execute: this.#execute as InvocationDb["execute"],
			beginTransaction: this.#beginTransaction,
			commit: () => this.#endTransaction("committed"),
			rollback: () => this.#endTransaction("rolled-back"),
			// Tracked: a caller waiting for the connection is work in flight (see busy()).
			connection: () => this.#tracked(this.#ready(true)),
		};
	}

	// --- Use ---
	// Bound (arrow functions), so that `const { query } = context.db` works as well as `context.db.query(...)`.

	readonly #query = (sql: unknown, values?: unknown): Promise<[QueryResult, FieldPacket[]]> =>
		this.#statement(sql, (connection) => connection.query(sql as string, values as never));

	readonly #execute = (sql: unknown, values?: unknown): Promise<[QueryResult, FieldPacket[]]> =>
		this.#statement(sql, (connection) => connection.execute(sql as string, values as never));

	readonly #beginTransaction = async (): Promise<void> => {
		if (this.#shared.settings.transaction) throw managedTransactionError();
		await this.#tracked(this.#ready(false).then((connection) => connection.beginTransaction()));
		this.#tx = "open";
	};

	#statement<T>(sql: unknown, run: (connection: Connection) => Promise<T>): Promise<T> {
		this.#stats.queries += 1;
		// For the KILL of a statement given up on: the session must still be running this one (cancel.ts).
		this.#lastSql = typeof sql === "string" ? sql : (sql as { sql?: string } | null)?.sql;
		const lease = this.#current;
		// The common case, with no promise hop: connected, alive, and in the transaction if there is one.
		const direct =
			lease !== undefined &&
			this.#state === "open" &&
			this.#lost === undefined &&
			(this.#shared.settings.transaction ? this.#begun : true);
		return this.#tracked(direct ? run(lease.connection) : this.#ready(true).then(run));
	}

	/** Counts the work in flight (see busy()), and turns a dead connection's errors into a clear one. */
	#tracked<T>(pending: Promise<T>): Promise<T> {
		this.#inFlight += 1;
		return pending.then(
			(result) => {
				this.#inFlight -= 1;
				return result;
			},
			(error: unknown) => {
				this.#inFlight -= 1;
				return Promise.reject(this.#failure(error));
			},
		);
	}

	/** The connection, connected; with `begin`, inside the managed transaction (begun now if need be). */
	async #ready(begin: boolean): Promise<Connection> {
		if (this.#state !== "open") throw closedError(this.#shared.settings.contextKey);
		if (this.#lost) throw this.#lost;
		this.#lease ??= this.#acquire();
		const lease = await this.#lease;
		if (this.#lost) throw this.#lost;
		if (begin && this.#shared.settings.transaction) {
			if (this.#tx === "none") this.#begin = this.#beginManaged(lease.connection);
			await this.#begin;
		}
		// Teardown may have closed it meanwhile (a statement issued while the connect was on its way).
		if (this.#closed()) throw closedError(this.#shared.settings.contextKey);
		return lease.connection;
	}

	#closed(): boolean {
		return this.#state === "closed";
	}

	#acquire(): Promise<Lease> {
		this.#invocation.inUse();
		this.#abort = new AbortController();
		const context: AcquireContext = {
			shared: this.#shared,
			request: this.#request,
			stats: this.#stats,
			signal: this.#abort.signal,
			onCoreError: this.#onCoreError,
		};
		const leased = this.#shared.settings.mode === "pool" ? acquire(context) : connect(context);
		const { signal } = this.#abort;
		return leased.then((lease) => {
			// Teardown gave the acquire up between its last check and now: it would never close this connection.
			if (signal.aborted) {
				lease.core.removeListener("error", this.#onCoreError);
				// The same error as a connect cut short earlier gives in its mode (acquire.ts).
				if (!lease.pooled) {
					const error = endedWhileConnectingError();
					destroyHard(lease.core, error);
					throw error;
				}
				releaseConnection(lease.connection);
				throw closedError(this.#shared.settings.contextKey);
			}
			this.#current = lease;
			return lease;
		});
	}

	// BEGIN, lazily, before the first statement. `SET TRANSACTION ISOLATION LEVEL` (next transaction only) is sent
	// only when an isolation level was asked for: one more round trip. RDS Proxy tracks the isolation level when it
	// is set for the session; this next-transaction form is not covered by its docs and may pin (mysql README,
	// "RDS Proxy"), which is why nothing is sent by default.
	#beginManaged(connection: Connection): Promise<void> {
		const transaction = this.#shared.settings.transaction;
		this.#tx = "open";
		this.#begun = false;
		return (async () => {
			try {
				if (transaction && transaction.isolationLevel !== undefined) {
					await connection.query(`SET TRANSACTION ISOLATION LEVEL ${transaction.isolationLevel}`);
				}
				await connection.query("START TRANSACTION");
				this.#begun = true;
			} catch (error) {
				this.#tx = "none";
				this.#begin = undefined;
				throw this.#failure(error);
			}
		})();
	}

	async #endTransaction(outcome: "committed" | "rolled-back"): Promise<void> {
		// Nothing connected and nothing begun: there is nothing to end, and no reason to connect.
		if (!this.#lease && this.#tx === "none") {
			if (this.#state !== "open") throw closedError(this.#shared.settings.contextKey);
			return;
		}
		await this.#tracked(
			this.#ready(false).then(async (connection) => {
				if (this.#begin) await this.#begin.catch(() => {});
				await (outcome === "committed" ? connection.commit() : connection.rollback());
			}),
		);
		if (this.#tx === "open") {
			this.#tx = "none";
			this.#begin = undefined;
			this.#begun = false;
			this.#stats.transaction = outcome;
		}
	}

	/** Statement errors pass through, except when the connection died: then a clear error, remembered. */
	#failure(error: unknown): unknown {
		if (error instanceof MiddyConnError) return error;
		const lease = this.#current;
		if (!lease || !(isFatal(error) || isDead(lease.core))) return error;
		this.#lost ??= connectionLostError(error, lease.resolved.target, lease.resolved.secrets);
		return this.#lost;
	}

	// Errors the core connection emits outside a statement (the server closed an idle connection): remember them,
	// so the next statement fails clearly and cleanup does not try to talk to a dead socket. Without a listener,
	// an 'error' event would crash the process.
	readonly #onCoreError = (error: unknown) => {
		const lease = this.#current;
		if (!lease || error instanceof MiddyConnError) return;
		this.#lost ??= connectionLostError(error, lease.resolved.target, lease.resolved.secrets);
		// A query stream on the connection is told too (mysql2 does not): a body reading it fails instead of hanging.
		// Not when we destroyed the connection ourselves: its reader is then already gone.
		failCommandInFlight(lease.core, this.#lost);
	};

	// --- The invocation's resource (@middy-conn/lifecycle) ---

	busy(): boolean {
		if (this.#inFlight > 0) return true;
		const lease = this.#current;
		return lease !== undefined && !this.#gaveUp && commandInFlight(lease.core);
	}

	interrupt(reason: Error): void {
		if (this.#state === "closed") return;
		if (!this.#current) {
			// Still connecting: give the connect up (scoped: its socket is destroyed; pool: released on arrival, or
			// destroyed while its session id is read).
			this.#abort?.abort();
			return;
		}
		if (this.busy()) this.#giveUp(interruptedError(reason));
	}

	close(end: InvocationEnd): Promise<void> | undefined {
		if (this.#state !== "open") return undefined;
		this.#state = "closing";
		// Never used: nothing was opened. Refuse later use and report.
		if (!this.#lease) {
			this.#state = "closed";
			return this.#report();
		}
		return this.#close(end);
	}

	async #close(end: InvocationEnd): Promise<void> {
		try {
			const lease = this.#current;
			if (!lease) {
				// Connect or acquire still in flight (or failed): abort it.
				const waiting = this.#inFlight > 0;
				this.#abort?.abort();
				// An answer given while the handler's first statement still waited for a connection (a busy pool, a
				// slow connect) fails as it would a moment later, with the connection held: the outcome must not
				// depend on how far the acquire got.
				if (waiting && this.#shared.settings.transaction && end.unfinished && isAnswered(end)) {
					throw unfinishedError(undefined);
				}
				return;
			}
			await closeLease(this.#closing(lease), end);
		} finally {
			this.#state = "closed";
			if (this.#kill) await this.#kill;
			await this.#report();
		}
	}

	destroy(reason: Error): void {
		if (this.#state === "closed") return;
		this.#state = "closed";
		this.#abort?.abort();
		if (this.#current) {
			if (this.#tx === "open") this.#stats.transaction = "rolled-back";
			this.#giveUp(reason);
		}
		void this.#report();
	}

	#closing(lease: Lease): Closing {
		return {
			lease,
			settings: this.#shared.settings,
			logger: this.#shared.logger,
			stats: this.#stats,
			request: this.#request,
			transactionOpen: this.#tx === "open",
			begin: this.#begin,
			lost: this.#lost,
			busy: this.busy(),
			giveUp: (reason) => this.#giveUp(reason),
			detach: () => lease.core.removeListener("error", this.#onCoreError),
		};
	}

	/**
	 * Destroys the connection now (what awaits it fails with `reason`), and stops on the server the statement it
	 * was running, if any: destroying the socket alone leaves it running, with its locks (cancel.ts).
	 */
	#giveUp(reason: string | Error) {
		const lease = this.#current;
		if (!lease || this.#gaveUp) return;
		// A statement can only be left running on the server by a connection that is still alive.
		const busy = this.busy() && !isDead(lease.core);
		// What the session must still be running for the KILL to be ours. A statement sent on the raw connection (a
		// query stream) cannot be checked: then whatever it runs is taken as ours.
		const sent = this.#inFlight > 0 ? this.#lastSql : undefined;
		this.#gaveUp = true;
		const error = typeof reason === "string" ? destroyedError(reason) : reason;
		this.#lost ??= error instanceof MiddyConnError ? error : interruptedError(error);
		destroyHard(lease.core, error);
		this.#stats.closed = "destroyed";
		if (busy && lease.sessionId !== undefined) {
			const { settings, logger } = this.#shared;
			const context = this.#request.context as { getRemainingTimeInMillis?: () => number };
			const budget = Math.min(
				settings.closeTimeout,
				remainingTimeInMillis(context, 1, settings.closeTimeout),
			);
			this.#kill = killSession(lease.resolved, lease.sessionId, sent, budget, logger);
		}
	}

	#report(): Promise<void> | undefined {
		if (this.#reported) return undefined;
		this.#reported = true;
		const { settings, logger } = this.#shared;
		if (!settings.onStats && !settings.logStats) return undefined;
		return reportMysqlStats(
			{ logger, logStats: settings.logStats, onStats: settings.onStats },
			this.#stats,
			this.#request,
		);
	}
}
