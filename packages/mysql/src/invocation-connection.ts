// `context.db`: the connection of one invocation.
//
// Created in `before` and cheap (no I/O): the connection is opened (scoped) or acquired (pool) by the first
// statement, and every statement issued while that happens waits on the same connect. It is closed when the
// invocation ends, on every path Middy can take (see @middy-conn/lifecycle): in the middleware's after/onError, by
// the invocation scope on an early response, at once when an onError throws. After that it refuses new statements
// rather than open a connection that nothing would close.
//
// Everything here lives on the request, never in module scope: with Lambda Managed Instances several invocations
// run at once in one process, and each must get its own connection.
import { performance } from "node:perf_hooks";
import type { Request } from "@middy/core";
import {
	type InvocationEnd,
	invocationScope,
	type Logger,
	MiddyConnError,
	remainingTimeInMillis,
} from "@middy-conn/lifecycle";
import type { Connection as CoreConnection } from "mysql2";
import mysql from "mysql2";
import type { Connection, FieldPacket, QueryResult } from "mysql2/promise";
import {
	closedError,
	commitError,
	connectError,
	connectionLostError,
	managedTransactionError,
} from "./errors.ts";
import { pkg, type ResolvedConfig, type Settings } from "./options.ts";
import { mayConnect, type WarmPool, warmPool, warmPoolByKey } from "./pool-cache.ts";
import { type MysqlConnectionStats, newStats, reportStats } from "./telemetry.ts";

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
	 * the middleware's: do not `end`, `release` or `destroy` it, and do not keep it beyond the invocation.
	 */
	connection(): Promise<Connection>;
}

/** What every invocation of one middleware shares: its settings and how to reach the server. Read-only. */
export interface Shared {
	readonly settings: Settings;
	readonly logger: Logger;
	/** The config for a connect: memoised for an object config, the function's answer otherwise. */
	resolve(request: Request): Promise<ResolvedConfig>;
	/** Pool mode with a config function: the pool this middleware used last, to skip the function when warm. */
	poolKey: string | undefined;
}

// mysql2's core (callback) connection: the promise wrapper's `.connection`. The parts used here are its socket,
// its state, its events and destroy().
type Core = CoreConnection & {
	readonly stream?: import("node:net").Socket;
	readonly lastActiveTime?: number;
	readonly _fatalError?: unknown;
	readonly _closing?: boolean;
};

interface Lease {
	readonly connection: Connection;
	readonly core: Core;
	readonly resolved: ResolvedConfig;
	readonly pooled: boolean;
}

const coreOf = (connection: Connection): Core => (connection as unknown as { connection: Core }).connection;

const isDead = (core: Core): boolean => {
	const state = (core as { state?: unknown }).state;
	if (typeof state === "string") return state === "error" || state === "disconnected";
	return Boolean(core._fatalError || core._closing || core.stream?.destroyed);
};

const isFatal = (error: unknown): boolean =>
	(error as { fatal?: unknown } | null)?.fatal === true ||
	["ER_CONNECTION_KILLED", "ER_SERVER_SHUTDOWN", "PROTOCOL_CONNECTION_LOST", "ECONNRESET", "EPIPE"].includes(
		(error as { code?: string } | null)?.code ?? "",
	);

/**
 * Closes the socket now. mysql2's destroy() only half-closes it (FIN) and leaves the commands in flight pending
 * forever; destroying the socket with an error fails them, so a handler still awaiting a query after a timeout
 * gets an error instead of a promise that never settles. A pooled connection leaves its pool.
 */
const destroyHard = (core: Core, reason: string) => {
	try {
		core.destroy();
	} catch {
		// already closed
	}
	core.stream?.destroy(
		new MiddyConnError(`MySQL connection destroyed: ${reason}`, {
			package: pkg,
			code: "MIDDY_CONN_MYSQL_DESTROYED",
		}),
	);
};

type Settled = { ok: true } | { ok: false; timedOut: boolean; error?: unknown };

/** Waits for `promise` at most `ms` (Infinity: no bound). Never rejects. */
const settleWithin = (promise: Promise<unknown>, ms: number): Promise<Settled> => {
	if (ms <= 0) {
		promise.catch(() => {});
		return Promise.resolve({ ok: false, timedOut: true });
	}
	let timer: NodeJS.Timeout | undefined;
	const bounded: Promise<Settled>[] = [
		promise.then(
			(): Settled => ({ ok: true }),
			(error): Settled => ({ ok: false, timedOut: false, error }),
		),
	];
	if (Number.isFinite(ms)) {
		bounded.push(
			new Promise<Settled>((resolve) => {
				timer = setTimeout(() => resolve({ ok: false, timedOut: true }), ms);
			}),
		);
	}
	return Promise.race(bounded).finally(() => clearTimeout(timer));
};

const socketClosed = (core: Core): Promise<void> => {
	const socket = core.stream;
	if (!socket || socket.destroyed) return Promise.resolve();
	return new Promise((resolve) => socket.once("close", () => resolve()));
};

export class InvocationConnection {
	readonly #shared: Shared;
	readonly #request: Request;
	readonly #stats: MysqlConnectionStats;
	/** Set when the invocation ends: no statement may start after it. */
	#ended = false;
	/** The connect (scoped) or acquire (pool), shared by every statement that comes before it completes. */
	#lease: Promise<Lease> | undefined;
	#current: Lease | undefined;
	#abort: AbortController | undefined;
	/** The connection died during this invocation: every later statement fails with this, none is replayed. */
	#lost: MiddyConnError | undefined;
	/** A transaction is open on the connection (begun by the middleware or by the handler). */
	#tx: "none" | "open" = "none";
	/** The middleware's BEGIN for the current transaction, shared by the statements that wait on it. */
	#begin: Promise<void> | undefined;
	#begun = false;
	#scopeClose: ((end: InvocationEnd) => Promise<void>) | undefined;
	#reported = false;

	constructor(shared: Shared, request: Request) {
		this.#shared = shared;
		this.#request = request;
		this.#stats = newStats(shared.settings.mode);
	}

	// Bound (arrow functions), so that `const { query } = context.db` works as well as `context.db.query(...)`.
	readonly query = (sql: unknown, values?: unknown): Promise<[QueryResult, FieldPacket[]]> =>
		this.#statement((connection) => connection.query(sql as string, values as never));

	readonly execute = (sql: unknown, values?: unknown): Promise<[QueryResult, FieldPacket[]]> =>
		this.#statement((connection) => connection.execute(sql as string, values as never));

	readonly beginTransaction = async (): Promise<void> => {
		if (this.#shared.settings.transaction) throw managedTransactionError();
		const connection = await this.#ready(false);
		await connection.beginTransaction().catch((error: unknown) => Promise.reject(this.#failure(error)));
		this.#tx = "open";
	};

	readonly commit = (): Promise<void> => this.#endTransaction("committed");

	readonly rollback = (): Promise<void> => this.#endTransaction("rolled-back");

	readonly connection = (): Promise<Connection> => this.#ready(true);

	/**
	 * Ends the invocation's use of the connection; idempotent (after, then onError, then the scope). Returns
	 * nothing when there is nothing to wait for (the connection was never used), so that Middy does not await.
	 */
	finish(end: InvocationEnd): Promise<void> | undefined {
		if (this.#scopeClose) return this.#scopeClose(end);
		// Never used: nothing was opened, nothing was registered with the scope. Refuse later use and report.
		this.#ended = true;
		return this.#report();
	}

	#statement<T>(run: (connection: Connection) => Promise<T>): Promise<T> {
		this.#stats.queries += 1;
		const lease = this.#current;
		// The common case, with no promise hop: connected, alive, and in the transaction if there is one.
		const direct =
			lease !== undefined &&
			!this.#ended &&
			this.#lost === undefined &&
			(this.#shared.settings.transaction ? this.#begun : true);
		const pending = direct ? run(lease.connection) : this.#ready(true).then(run);
		return pending.catch((error: unknown) => Promise.reject(this.#failure(error)));
	}

	/** The connection, connected; with `begin`, inside the managed transaction (begun now if need be). */
	async #ready(begin: boolean): Promise<Connection> {
		if (this.#ended) throw closedError(this.#shared.settings.contextKey);
		this.#lease ??= this.#open();
		const lease = await this.#lease;
		if (this.#lost) throw this.#lost;
		if (begin && this.#shared.settings.transaction) {
			if (this.#tx === "none") this.#begin = this.#beginManaged(lease.connection);
			await this.#begin;
		}
		if (this.#ended) throw closedError(this.#shared.settings.contextKey);
		return lease.connection;
	}

	// BEGIN, lazily, before the first statement. `SET TRANSACTION ISOLATION LEVEL` (next transaction only) is sent
	// only when an isolation level was asked for: it is a session-state statement, which RDS Proxy may pin on.
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
			if (this.#ended) throw closedError(this.#shared.settings.contextKey);
			return;
		}
		const connection = await this.#ready(false);
		if (this.#begin) await this.#begin.catch(() => {});
		const run = outcome === "committed" ? connection.commit() : connection.rollback();
		await run.catch((error: unknown) => Promise.reject(this.#failure(error)));
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
		if (lease && !this.#lost && !(error instanceof MiddyConnError)) {
			this.#lost = connectionLostError(error, lease.resolved.target, lease.resolved.secrets);
		}
	};

	#open(): Promise<Lease> {
		this.#abort = new AbortController();
		this.#scopeClose = invocationScope(this.#request).add({
			name: pkg,
			close: (end) => this.#close(end),
			destroy: (reason) => this.#destroyNow(reason),
		});
		const signal = this.#abort.signal;
		return this.#shared.settings.mode === "pool" ? this.#acquire(signal) : this.#connect(signal);
	}

	async #connect(signal: AbortSignal): Promise<Lease> {
		const resolved = await this.#shared.resolve(this.#request);
		if (signal.aborted) throw closedError(this.#shared.settings.contextKey);
		const started = performance.now();
		const core = mysql.createConnection(resolved.driver) as unknown as Core;
		// Permanent: a core connection emits 'error' when the server closes it between statements.
		core.on("error", this.#onCoreError);
		const onAbort = () => destroyHard(core, "the invocation ended while connecting");
		signal.addEventListener("abort", onAbort, { once: true });
		try {
			await new Promise<void>((resolve, reject) => {
				core.once("connect", () => resolve());
				core.once("error", reject);
			});
		} catch (error) {
			this.#stats.connectMs = performance.now() - started;
			destroyHard(core, "connect failed");
			throw error instanceof MiddyConnError ? error : connectError(error, resolved.target, resolved.secrets);
		} finally {
			signal.removeEventListener("abort", onAbort);
		}
		this.#stats.connectMs = performance.now() - started;
		this.#stats.connected = true;
		const lease: Lease = { connection: core.promise(), core, resolved, pooled: false };
		this.#current = lease;
		return lease;
	}

	async #acquire(signal: AbortSignal): Promise<Lease> {
		let started: number | undefined;
		for (let attempt = 0; ; attempt += 1) {
			const pool = await this.#pool();
			// like scoped mode, connectMs leaves out the config function's time
			started ??= performance.now();
			if (signal.aborted) throw closedError(this.#shared.settings.contextKey);
			let connection: Connection;
			try {
				connection = await pool.pool.getConnection();
			} catch (error) {
				this.#stats.connectMs = performance.now() - started;
				throw connectError(error, pool.resolved.target, pool.resolved.secrets);
			}
			const core = coreOf(connection);
			if (signal.aborted) {
				// The invocation ended while this one was on its way: it is unused and clean, so it goes back.
				(connection as unknown as { release(): void }).release();
				throw closedError(this.#shared.settings.contextKey);
			}
			const fresh = !pool.seen.has(core);
			pool.seen.add(core);
			// A warm connection that died while idle, or that was idle longer than the pool's idleTimeout, is
			// discarded before any statement is sent, so no statement is ever replayed. mysql2's own idle timer does
			// not run while Lambda is frozen, and NAT gateways and proxies drop idle connections silently.
			const idleMs = Date.now() - (core.lastActiveTime ?? Date.now());
			if (!fresh && attempt <= pool.connectionLimit && (isDead(core) || idleMs > pool.idleTimeout)) {
				destroyHard(core, "stale in the pool");
				continue;
			}
			core.on("error", this.#onCoreError);
			this.#stats.connectMs = performance.now() - started;
			this.#stats.connected = fresh;
			this.#stats.acquired = true;
			const lease: Lease = { connection, core, resolved: pool.resolved, pooled: true };
			this.#current = lease;
			return lease;
		}
	}

	// The warm pool for this invocation. A config function is called only when the pool may have to open a
	// connection (none free): that is when a rotated password or IAM token must be in place.
	async #pool(): Promise<WarmPool> {
		const shared = this.#shared;
		if (typeof shared.settings.config === "function" && shared.poolKey !== undefined) {
			const known = warmPoolByKey(shared.poolKey);
			if (known && !mayConnect(known)) return known;
		}
		const pool = warmPool(await shared.resolve(this.#request));
		shared.poolKey = pool.key;
		return pool;
	}

	async #close(end: InvocationEnd): Promise<void> {
		this.#ended = true;
		try {
			const lease = this.#current;
			if (!lease) {
				// Connect or acquire still in flight (or failed): abort it. Scoped: its socket is destroyed now. Pool:
				// the connection goes back to the pool unused when it arrives.
				this.#abort?.abort();
				return;
			}
			await this.#finishLease(lease, end);
		} finally {
			await this.#report();
		}
	}

	async #finishLease(lease: Lease, end: InvocationEnd): Promise<void> {
		const { settings, logger } = this.#shared;
		const transactionOpen = this.#tx === "open";
		if (transactionOpen) this.#stats.transaction = "rolled-back";
		// Timeout: the handler may still be running a statement on it. A dead connection: nothing to talk to.
		// Either way, destroy; the server rolls back what was open when it sees the socket close.
		if (end.kind === "timeout" || this.#lost || isDead(lease.core)) {
			this.#destroyLease(lease, end.kind === "timeout" ? "the invocation timed out" : "the connection died");
			// The handler succeeded, but the connection died before the middleware could COMMIT: the server rolled
			// the transaction back, and the invocation must not report a success whose writes are gone.
			if (end.kind === "success" && transactionOpen && settings.transaction) {
				const cause = this.#lost ?? new Error("the connection was closed before COMMIT");
				throw commitError(cause, lease.resolved.target, lease.resolved.secrets, true);
			}
			return;
		}
		const context = this.#request.context as { getRemainingTimeInMillis?: () => number };
		if (end.kind === "success" && transactionOpen && settings.transaction) {
			// COMMIT is the invocation's own work, bounded only by the time the invocation has left.
			const commit = await settleWithin(
				(this.#begin ?? Promise.resolve()).then(() => lease.connection.commit()),
				remainingTimeInMillis(context, 10, Number.POSITIVE_INFINITY),
			);
			if (!commit.ok) {
				// No answer (or a lost connection): the outcome is unknown. An error answer: nothing was committed,
				// and destroying the connection rolls back whatever is left.
				const error = commit.timedOut
					? new Error("no answer before the invocation's deadline")
					: commit.error;
				const known = !commit.timedOut && !isFatal(error) && !isDead(lease.core);
				this.#destroyLease(lease, "COMMIT failed");
				throw commitError(error, lease.resolved.target, lease.resolved.secrets, known);
			}
			this.#stats.transaction = "committed";
		} else if (end.kind === "success" && transactionOpen) {
			logger.warn(
				"@middy-conn/mysql: a transaction begun with beginTransaction() was still open when the invocation ended; it was rolled back",
			);
		}
		// Graceful close. An open transaction is rolled back by it: COM_RESET_CONNECTION (pool) and the end of the
		// session (scoped) both roll back, so no separate ROLLBACK round trip is needed.
		const budget = Math.min(settings.closeTimeout, remainingTimeInMillis(context, 10, settings.closeTimeout));
		if (lease.pooled) {
			// Reset here, awaited, rather than with mysql2's resetOnRelease, which would run after the invocation
			// returned (release() does not wait), that is while Lambda has the process frozen.
			const reset = await settleWithin(lease.connection.reset(), budget);
			if (!reset.ok) {
				const code = reset.timedOut ? "TIMEOUT" : (reset.error as { code?: string } | undefined)?.code;
				logger.warn("@middy-conn/mysql: could not reset the connection; destroyed it instead", { code });
				this.#destroyLease(lease, "reset failed");
				return;
			}
			lease.core.removeListener("error", this.#onCoreError);
			(lease.connection as unknown as { release(): void }).release();
			this.#stats.closed = "released";
			return;
		}
		// QUIT, then wait for the server to close the socket: the session is gone before Lambda freezes the process.
		const closing = socketClosed(lease.core);
		const ended = await settleWithin(
			lease.connection.end().then(() => closing),
			budget,
		);
		if (!ended.ok) {
			this.#destroyLease(lease, "QUIT was not answered in time");
			return;
		}
		this.#stats.closed = "ended";
	}

	#destroyLease(lease: Lease, reason: string) {
		destroyHard(lease.core, reason);
		this.#stats.closed = "destroyed";
	}

	// Synchronous teardown, when Middy leaves no chance to wait (an onError threw).
	#destroyNow(_reason: unknown) {
		this.#ended = true;
		this.#abort?.abort();
		const lease = this.#current;
		if (lease) {
			if (this.#tx === "open") this.#stats.transaction = "rolled-back";
			this.#destroyLease(lease, "an onError middleware threw");
		}
		void this.#report();
	}

	#report(): Promise<void> | undefined {
		if (this.#reported) return undefined;
		this.#reported = true;
		const { settings, logger } = this.#shared;
		if (!settings.onStats && !settings.logStats) return undefined;
		return reportStats(
			{ logger, logStats: settings.logStats, onStats: settings.onStats },
			this.#stats,
			this.#request,
		);
	}
}
