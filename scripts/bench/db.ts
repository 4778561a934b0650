// DB: one indexed SELECT per invocation against the throwaway MySQL on loopback. Two comparisons, because their
// invocations differ tenfold in cost: a connection per invocation (connect + auth + query + close), and a warm
// connection per invocation (pool acquire + query + release). Every contender is a middy handler.
import middy from "@middy/core";
import mysql from "mysql2/promise";
import serverlessMysql from "serverless-mysql";
import { runIsolatedComparison } from "./isolated.ts";
import { benchEvent, invoker } from "./lambda.ts";
import { loadMysql, type MysqlModule } from "./middlewares.ts";
import type { DbPeer } from "./peers.ts";
import type { ComparisonResult, Contender } from "./runner.ts";
import type { Mode } from "./settings.ts";

const SQL = "SELECT id, customer, total FROM orders WHERE id = ?";
const POOL_SIZE = 4;

export const NAMES = {
	scoped: "mysqlConnection scoped (middy)",
	scopedNoCancel: "mysqlConnection scoped, cancelOnTimeout: false (middy)",
	rawConnect: "mysql2 createConnection + query + end (middy)",
	rawConnectClosed: "mysql2 createConnection + query + end, await close (middy)",
	pool: "mysqlConnection pool (middy)",
	rawPool: "mysql2 pool getConnection + query + release (middy)",
	rawPoolReset: "mysql2 pool + reset() before release (middy)",
	serverlessMysql: "serverless-mysql query + end (middy)",
	moduleConnection: "module-level connection, query only (middy)",
} as const;

const checkRows = (rows: unknown, what: string) => {
	if (!Array.isArray(rows) || rows.length !== 1) throw new Error(`${what}: expected one row`);
	return rows[0];
};

type Config = DbPeer["config"];

const connectContenders = (config: Config, module: MysqlModule | undefined): Contender[] => {
	const contenders: Contender[] = [];
	if (module) {
		const scoped = (name: string, options: { cancelOnTimeout?: boolean }) =>
			middy()
				.use(module.mysqlConnection({ config, mode: "scoped", ...options }))
				.handler(async (_event: unknown, context) => {
					const [rows] = await context.db.query(SQL, [benchEvent.id]);
					return checkRows(rows, name);
				});
		contenders.push({
			name: NAMES.scoped,
			note: "`context.db.query()`: a connection opened on first use and closed before the invocation returns",
			invoke: invoker(scoped(NAMES.scoped, {})),
		});
		contenders.push({
			name: NAMES.scopedNoCancel,
			note: "the same without learning the session's id (`SELECT CONNECTION_ID()`, one round trip per connect), which a KILL at a timeout needs (not a goal; explains one)",
			invoke: invoker(scoped(NAMES.scopedNoCancel, { cancelOnTimeout: false })),
		});
	}
	const rawHandler = middy(async () => {
		const connection = await mysql.createConnection(config);
		try {
			const [rows] = await connection.query(SQL, [benchEvent.id]);
			return checkRows(rows, NAMES.rawConnect);
		} finally {
			await connection.end();
		}
	});
	contenders.push({
		name: NAMES.rawConnect,
		note: "the hand-written safe pattern, seed 003: connect in the handler, `end()` in `finally`",
		invoke: invoker(rawHandler),
	});
	const closedHandler = middy(async () => {
		const connection = await mysql.createConnection(config);
		// mysql2's end() resolves as soon as QUIT is queued. The contract (issue 4) also wants the session gone
		// before the invocation returns: wait for the server to close the socket.
		const socket = (connection as unknown as { connection: { stream: import("node:net").Socket } }).connection
			.stream;
		const closed = new Promise((resolve) => socket.once("close", resolve));
		try {
			const [rows] = await connection.query(SQL, [benchEvent.id]);
			return checkRows(rows, NAMES.rawConnectClosed);
		} finally {
			await connection.end();
			await closed;
		}
	});
	contenders.push({
		name: NAMES.rawConnectClosed,
		note: "the same, and waits for the server to close the socket, as scoped mode must (not a goal; explains one)",
		invoke: invoker(closedHandler),
	});
	return contenders;
};

const warmContenders = async (config: Config, module: MysqlModule | undefined): Promise<Contender[]> => {
	const contenders: Contender[] = [];
	if (module) {
		const handler = middy()
			.use(module.mysqlConnection({ config: { ...config, connectionLimit: POOL_SIZE }, mode: "pool" }))
			.handler(async (_event: unknown, context) => {
				const [rows] = await context.db.query(SQL, [benchEvent.id]);
				return checkRows(rows, NAMES.pool);
			});
		contenders.push({
			name: NAMES.pool,
			note: "`context.db.query()` on a connection acquired from a warm pool, reset and released at the end",
			invoke: invoker(handler),
		});
	}

	const pool = mysql.createPool({ ...config, connectionLimit: POOL_SIZE });
	const rawPoolHandler = middy(async () => {
		const connection = await pool.getConnection();
		try {
			const [rows] = await connection.query(SQL, [benchEvent.id]);
			return checkRows(rows, NAMES.rawPool);
		} finally {
			connection.release();
		}
	});
	contenders.push({
		name: NAMES.rawPool,
		note: "module-scope `createPool()`; the next invocation inherits any session state (unsafe, but the floor for a pool)",
		invoke: invoker(rawPoolHandler),
		teardown: () => pool.end(),
	});

	const resetPool = mysql.createPool({ ...config, connectionLimit: POOL_SIZE });
	const resetHandler = middy(async () => {
		const connection = await resetPool.getConnection();
		try {
			const [rows] = await connection.query(SQL, [benchEvent.id]);
			return checkRows(rows, NAMES.rawPoolReset);
		} finally {
			// COM_RESET_CONNECTION: the round trip that makes a pooled connection safe to hand to the next invocation.
			await connection.reset();
			connection.release();
		}
	});
	contenders.push({
		name: NAMES.rawPoolReset,
		note: "the raw pool plus the `reset()` round trip pool mode needs for isolation (not a goal; explains one)",
		invoke: invoker(resetHandler),
		teardown: () => resetPool.end(),
	});

	// Its defaults. The default usedConnsFreq (0) means "check the processlist on every end()", with a cache test
	// of `now - updated > freq` on Date.now(): in a tight loop about every other end() would land in the same
	// millisecond and skip the check, which a Lambda never sees. The comparison's 2 ms gap makes every end() check.
	const sls = serverlessMysql({ config });
	const slsHandler = middy(async () => {
		const rows = await sls.query(SQL, [benchEvent.id]);
		await sls.end();
		return checkRows(rows, NAMES.serverlessMysql);
	});
	contenders.push({
		name: NAMES.serverlessMysql,
		note: "defaults as on Lambda: `end()` counts the server's connections (a processlist query) every invocation",
		invoke: invoker(slsHandler),
		teardown: () => sls.quit(),
	});

	const moduleConnection = await mysql.createConnection(config);
	const moduleHandler = middy(async () => {
		const [rows] = await moduleConnection.query(SQL, [benchEvent.id]);
		return checkRows(rows, NAMES.moduleConnection);
	});
	contenders.push({
		name: NAMES.moduleConnection,
		note: "one connection for the environment's life: the stale-snapshot bug of seed 003, and the floor",
		invoke: invoker(moduleHandler),
		teardown: () => moduleConnection.end(),
	});
	return contenders;
};

/** The contenders of one comparison of this group, as a contender's process builds them (isolated.ts). */
export const buildContenders = async (comparison: string, args: unknown): Promise<Contender[]> => {
	const { config } = args as { config: Config };
	const module = (await loadMysql()).module;
	if (comparison === "db-connect") return connectContenders(config, module);
	if (comparison === "db-warm") return warmContenders(config, module);
	throw new Error(`no DB comparison ${comparison}`);
};

export const runDbGroup = async (mode: Mode, db: DbPeer): Promise<ComparisonResult[]> => {
	const results: ComparisonResult[] = [];
	const args = { config: db.config };
	const here = new URL(import.meta.url);
	mode.log("DB, a connection per invocation");
	results.push(
		await runIsolatedComparison(
			here,
			mode,
			{
				id: "db-connect",
				title: "DB, a new connection per invocation",
				description:
					"Connect, authenticate, one indexed SELECT, close; 2 ms idle (not timed) between invocations, as between Lambda events. Each contender runs in a process of its own, the processes taking turns. The reference is raw mysql2.",
				reference: NAMES.rawConnect,
				gapMs: 2,
			},
			{ budgetMs: 18_000, batch: 10 },
			args,
		),
	);
	mode.log("DB, a warm connection per invocation");
	results.push(
		await runIsolatedComparison(
			here,
			mode,
			{
				id: "db-warm",
				title: "DB, a warm connection per invocation",
				description:
					"One indexed SELECT on a connection that already exists; 2 ms idle (not timed) between invocations, as between Lambda events (pool mode's reset is answered in that gap, and serverless-mysql's clock-based checks run). Each contender runs in a process of its own, the processes taking turns. The reference is the raw mysql2 pool.",
				reference: NAMES.rawPool,
				gapMs: 2,
			},
			{ budgetMs: 15_000, batch: 20 },
			args,
		),
	);
	return results;
};
