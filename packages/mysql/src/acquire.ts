// Acquire: the invocation's connection, opened (scoped) or taken from the warm pool (pool), on first use.
//
// Both return a Lease: the connection, the config it was opened with (for errors and for KILL), and the server's
// id for its session (see cancel.ts). A warm pooled connection that died while idle, or that was idle too long,
// is discarded before any statement is sent, so that no statement is ever replayed.
import { performance } from "node:perf_hooks";
import type { Request } from "@middy/core";
import { type Logger, MiddyConnError, remainingTimeInMillis, settleWithin } from "@middy-conn/lifecycle";
import mysql from "mysql2";
import type { Connection } from "mysql2/promise";
import { learnConnectionId } from "./cancel.ts";
import { type RetryScope, withConnectRetry } from "./connect-retry.ts";
import { closedError, connectError, destroyedError, endedWhileConnectingError } from "./errors.ts";
import { type Core, coreOf, destroyHard, isDead, releaseConnection } from "./mysql2-adapter.ts";
import type { ResolvedConfig, Settings } from "./options.ts";
import { mayConnect, type PendingReset, type WarmPool, warmPool, warmPoolByKey } from "./pool-cache.ts";
import { noteServerFull } from "./server-pressure.ts";
import type { MysqlConnectionStats } from "./telemetry.ts";

/** What every invocation of one middleware shares: its settings and how to reach the server. */
export interface Shared {
	readonly settings: Settings;
	readonly logger: Logger;
	/** The config for a connect: memoised for an object config, the function's answer otherwise. */
	resolve(request: Request): Promise<ResolvedConfig>;
	/** Pool mode with a config function: the pool this middleware used last, to skip the function when warm. */
	poolKey: string | undefined;
}

/** The invocation's hold on a connection. */
export interface Lease {
	readonly connection: Connection;
	readonly core: Core;
	readonly resolved: ResolvedConfig;
	readonly pooled: boolean;
	/** The server's id for the session (undefined with `cancelOnTimeout: false`, or when it could not be read). */
	readonly sessionId: number | undefined;
	/** Pool mode: the warm pool it came from. */
	readonly pool?: WarmPool;
}

export interface AcquireContext {
	readonly shared: Shared;
	readonly request: Request;
	readonly stats: MysqlConnectionStats;
	/** Aborted when the invocation gives up on the connect (teardown, timeout). */
	readonly signal: AbortSignal;
	/** Listens to the core connection's errors outside statements for as long as the invocation holds it. */
	readonly onCoreError: (error: unknown) => void;
}

/** Scoped mode: a new connection, for this invocation only. */
export const connect = async (context: AcquireContext): Promise<Lease> => {
	const { shared, request, stats, signal } = context;
	const resolved = await shared.resolve(request);
	if (signal.aborted) throw closedError(shared.settings.contextKey);
	const started = performance.now();
	let core: Core | undefined;
	let sessionId: number | undefined;
	try {
		core = await withConnectRetry(shared.settings.connectRetry, retryScope(context), () =>
			openConnection(context, resolved),
		);
		if (shared.settings.cancelOnTimeout) sessionId = await sessionIdOf(core, core.promise(), signal);
		// The invocation ended while the session id was on its way: nobody else would close this connection. The same
		// error as for an invocation that ends during the handshake (openConnection).
		if (signal.aborted) throw endedWhileConnectingError();
	} catch (error) {
		stats.connectMs = performance.now() - started;
		if (core) destroyHard(core, destroyedError("connect failed"));
		if (error instanceof MiddyConnError) throw error;
		if (signal.aborted) throw endedWhileConnectingError();
		throw connectError(error, resolved.target, resolved.secrets, stats.connectRetries);
	}
	stats.connectMs = performance.now() - started;
	stats.connected = true;
	return { connection: core.promise(), core, resolved, pooled: false, sessionId };
};

// One connect: the connection once the server has accepted it, or the driver's error (the socket destroyed).
const openConnection = async (context: AcquireContext, resolved: ResolvedConfig): Promise<Core> => {
	const core = mysql.createConnection(resolved.driver) as unknown as Core;
	// Permanent: a core connection emits 'error' when the server closes it between statements.
	core.on("error", context.onCoreError);
	try {
		return await destroyedOnAbort(
			core,
			context.signal,
			() =>
				new Promise<Core>((resolve, reject) => {
					core.once("connect", () => resolve(core));
					core.once("error", reject);
				}),
		);
	} catch (error) {
		destroyHard(core, destroyedError("connect failed"));
		throw error;
	}
};

// The session id (cancel.ts), read under the invocation's signal like the handshake before it.
const sessionIdOf = (core: Core, connection: Connection, signal: AbortSignal): Promise<number | undefined> =>
	signal.aborted
		? Promise.resolve(undefined)
		: destroyedOnAbort(core, signal, () => learnConnectionId(connection));

// `step` of opening a connection, with the invocation's end destroying the connection: a teardown while an answer is
// on its way (a slow or silent network path) fails the step at once, and nothing holds the connection past the
// invocation.
const destroyedOnAbort = async <T>(core: Core, signal: AbortSignal, step: () => Promise<T>): Promise<T> => {
	const onAbort = () => destroyHard(core, endedWhileConnectingError());
	signal.addEventListener("abort", onAbort, { once: true });
	try {
		return await step();
	} finally {
		signal.removeEventListener("abort", onAbort);
	}
};

const retryScope = (context: AcquireContext, pool?: WarmPool): RetryScope => ({
	signal: context.signal,
	context: context.request.context,
	onRetry: () => {
		context.stats.connectRetries += 1;
		// A refusal is a reading of the server's load, and a high one (server-pressure.ts).
		if (pool) noteServerFull(pool.load);
	},
});

/** Pool mode: a connection from the warm pool of this execution environment. */
export const acquire = async (context: AcquireContext): Promise<Lease> => {
	const { shared, request, stats, signal } = context;
	let started: number | undefined;
	for (let attempt = 0; ; attempt += 1) {
		const pool = await warmPoolFor(shared, request);
		// like scoped mode, connectMs leaves out the config function's time
		started ??= performance.now();
		if (signal.aborted) throw closedError(shared.settings.contextKey);
		let connection: Connection;
		try {
			connection = await withConnectRetry(shared.settings.connectRetry, retryScope(context, pool), () =>
				pool.pool.getConnection(),
			);
		} catch (error) {
			stats.connectMs = performance.now() - started;
			throw connectError(error, pool.resolved.target, pool.resolved.secrets, stats.connectRetries);
		}
		const core = coreOf(connection);
		if (signal.aborted) {
			// The invocation ended while this one was on its way: it is unused and clean, so it goes back.
			releaseConnection(connection);
			throw closedError(shared.settings.contextKey);
		}
		// The previous invocation's reset of this connection was sent when it gave the connection back, and answered
		// while Lambda had the process frozen (close.ts): it is awaited here, before any statement of this invocation.
		// A connection whose reset failed, or went unanswered, is never handed out.
		const reset = pool.resets.get(core);
		if (reset) {
			pool.resets.delete(core);
			// Usually answered long ago (while Lambda had the process frozen): then there is nothing to wait for.
			// Otherwise at most `closeTimeout`, within the invocation's remaining time.
			const waitMs = Math.min(
				shared.settings.closeTimeout,
				remainingTimeInMillis(request.context, 0, shared.settings.closeTimeout),
			);
			const clean = await resetAnswer(reset, signal, waitMs);
			if (clean === "aborted") {
				// The invocation ended while waiting: the connection goes back with its reset still on its way.
				pool.resets.set(core, reset);
				releaseConnection(connection);
				throw closedError(shared.settings.contextKey);
			}
			if (!clean) {
				destroyHard(core, destroyedError("its reset failed"));
				continue;
			}
		}
		const fresh = !pool.seen.has(core);
		pool.seen.add(core);
		// Once per connection: while it is idle in the pool nobody else listens to its errors, and a late one (the
		// server closing it, a reset that fails after release) must not crash the process.
		if (fresh) core.on("error", ignoreError);
		// mysql2's own idle timer does not run while Lambda is frozen, and NAT gateways and proxies drop idle
		// connections silently: a warm connection is checked before use.
		if (
			!fresh &&
			attempt <= pool.connectionLimit &&
			(isDead(core) || idleSince(pool, core) > pool.idleTimeout)
		) {
			destroyHard(core, destroyedError("stale in the pool"));
			continue;
		}
		core.on("error", context.onCoreError);
		let sessionId = pool.sessionIds.get(core);
		if (sessionId === undefined && shared.settings.cancelOnTimeout) {
			try {
				sessionId = await sessionIdOf(core, connection, signal);
			} catch (error) {
				core.removeListener("error", context.onCoreError);
				destroyHard(core, destroyedError("could not read its session id"));
				stats.connectMs = performance.now() - started;
				if (signal.aborted) throw closedError(shared.settings.contextKey);
				throw connectError(error, pool.resolved.target, pool.resolved.secrets);
			}
			if (sessionId !== undefined) pool.sessionIds.set(core, sessionId);
		}
		stats.connectMs = performance.now() - started;
		if (signal.aborted) {
			// The invocation ended while this acquire awaited the session id: nobody will release the connection but
			// us. It is new and clean, so it goes back.
			core.removeListener("error", context.onCoreError);
			releaseConnection(connection);
			throw closedError(shared.settings.contextKey);
		}
		stats.connected = fresh;
		stats.acquired = true;
		return { connection, core, resolved: pool.resolved, pooled: true, sessionId, pool };
	}
};

/**
 * The answer to a connection's pending reset: true (clean), false (failed, or no answer within `ms`), or "aborted"
 * (the invocation ended while waiting).
 */
const resetAnswer = async (
	reset: PendingReset,
	signal: AbortSignal,
	ms: number,
): Promise<boolean | "aborted"> => {
	if (reset.clean !== undefined) return reset.clean;
	let onAbort: (() => void) | undefined;
	const aborted = new Promise<"aborted">((resolve) => {
		onAbort = () => resolve("aborted");
		signal.addEventListener("abort", onAbort, { once: true });
	});
	try {
		// `answered` never rejects: it settles once `clean` is known.
		const answered = settleWithin(reset.answered, ms).then((settled) => settled.ok && reset.clean === true);
		return await Promise.race([answered, aborted]);
	} finally {
		if (onAbort) signal.removeEventListener("abort", onAbort);
	}
};

const ignoreError = () => {};

/** How long (ms) a connection has been idle in the pool: since an invocation last gave it back. */
const idleSince = (pool: WarmPool, core: Core): number =>
	Date.now() - (pool.releasedAt.get(core) ?? Date.now());

// The warm pool for this invocation. A config function is called only when the pool may have to open a
// connection (none free): that is when a rotated password or IAM token must be in place.
const warmPoolFor = async (shared: Shared, request: Request): Promise<WarmPool> => {
	if (typeof shared.settings.config === "function" && shared.poolKey !== undefined) {
		const known = warmPoolByKey(shared.poolKey);
		if (known && !mayConnect(known)) return known;
	}
	const pool = warmPool(await shared.resolve(request));
	shared.poolKey = pool.key;
	return pool;
};
