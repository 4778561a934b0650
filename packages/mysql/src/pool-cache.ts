// Mode "pool": one warm mysql2 pool per execution environment and per target, reused by every invocation.
//
// This is the only module-level state of the package, and it holds no per-invocation state: pools, keyed by the
// non-secret connection options. Secrets are kept out of the key so that a rotating IAM token or a rotated
// password updates the pool in place instead of creating a new pool (and stranding the old one's connections)
// every 15 minutes.
import { createHash } from "node:crypto";
import { optionsKey } from "@middy-conn/lifecycle";
import mysql from "mysql2";
import type { Pool } from "mysql2/promise";
import { mayOpenConnection, poolLimits, setNextConnectionSecrets } from "./mysql2-adapter.ts";
import { isSecretKey, type ResolvedConfig } from "./options.ts";
import { type LoadReading, newLoadReading } from "./server-pressure.ts";

/** A reset on its way: `clean` is set when it has been answered (true) or has failed (false). */
export interface PendingReset {
	clean: boolean | undefined;
	readonly answered: Promise<boolean>;
}

export interface WarmPool {
	readonly key: string;
	readonly pool: Pool;
	/** Connections this pool has already handed out once: an acquire that returns another one opened it. */
	readonly seen: WeakSet<object>;
	/**
	 * The reset each connection was given back with, still on its way or answered: true when the session is clean.
	 * The next acquire of the connection awaits it (see close.ts).
	 */
	readonly resets: WeakMap<object, PendingReset>;
	/** When each connection was last given back to the pool (Date.now()): how long it has been idle. */
	readonly releasedAt: WeakMap<object, number>;
	/** The server's session id of each connection (learnt once per connection, for KILL: see cancel.ts). */
	readonly sessionIds: WeakMap<object, number>;
	/** mysql2's idleTimeout for this pool (ms): a connection idle longer is not reused (see acquireFrom). */
	readonly idleTimeout: number;
	readonly connectionLimit: number;
	/** The target and secrets of the config last applied: for errors about this pool's connections. */
	resolved: ResolvedConfig;
	/** What the pool knows of its server's load: whether to keep connections warm (server-pressure.ts). */
	readonly load: LoadReading;
}

const pools = new Map<string, WarmPool>();

/** A digest of the non-secret options: equal configs share a pool, whatever their password or token. */
export const poolKey = (driver: Record<string, unknown>): string => {
	const visible: Record<string, unknown> = {};
	for (const key of Object.keys(driver)) {
		if (!isSecretKey(key)) visible[key] = driver[key];
	}
	// mysql2 writes `rejectUnauthorized` (default true) into the ssl object it is given: key on its meaning, so
	// that the same object keys the same before and after a first connect.
	if (visible.ssl && typeof visible.ssl === "object") {
		const ssl = visible.ssl as Record<string, unknown>;
		visible.ssl = { ...ssl, rejectUnauthorized: ssl.rejectUnauthorized !== false };
	}
	return createHash("sha256").update(optionsKey(visible)).digest("base64url");
};

// An object config is resolved once per middleware, so its key is computed once too.
const keys = new WeakMap<ResolvedConfig, string>();

/** The warm pool for this config, created on first use. Secrets given now apply to its next new connections. */
export const warmPool = (resolved: ResolvedConfig): WarmPool => {
	let key = keys.get(resolved);
	if (key === undefined) {
		key = poolKey(resolved.driver);
		keys.set(resolved, key);
	}
	const existing = pools.get(key);
	if (existing) {
		if (existing.resolved !== resolved) {
			// A fresh IAM token or a rotated password reaches the pool's next connection (see mysql2-adapter.ts).
			setNextConnectionSecrets(existing.pool, resolved.driver);
			existing.resolved = resolved;
		}
		return existing;
	}
	const core = mysql.createPool({ ...resolved.driver });
	const pool = core.promise();
	const { idleTimeout, connectionLimit } = poolLimits(pool);
	const entry: WarmPool = {
		key,
		pool,
		seen: new WeakSet(),
		releasedAt: new WeakMap(),
		resets: new WeakMap(),
		sessionIds: new WeakMap(),
		idleTimeout,
		connectionLimit,
		resolved,
		load: newLoadReading(),
	};
	pools.set(key, entry);
	return entry;
};

/** The warm pool with this key, if this process still has it. */
export const warmPoolByKey = (key: string): WarmPool | undefined => pools.get(key);

/** True when acquiring from this pool right now may open a new connection (see mysql2-adapter.ts). */
export const mayConnect = (entry: WarmPool): boolean => mayOpenConnection(entry.pool);

/** Ends every warm pool (tests; or a shutdown hook of a Lambda extension). New invocations create them again. */
export const closeMysqlPools = async (): Promise<void> => {
	const entries = [...pools.values()];
	pools.clear();
	await Promise.allSettled(entries.map((entry) => entry.pool.end()));
};

/** How many warm pools this process holds (for tests and diagnostics). */
export const warmPoolCount = (): number => pools.size;
